"""agentkit.addr: host literals and URLs spelled one way, and URLs that are safe to show."""

from __future__ import annotations

import pytest

from agentkit import addr


@pytest.mark.parametrize("host, literal", [("198.18.0.1", "198.18.0.1"), ("fd00::1", "[fd00::1]"),
                                           ("[fd00::1]", "[fd00::1]"), ("coord.example", "coord.example")])
def test_ipv6_literals_get_brackets_once(host, literal):
    assert addr.host_literal(host) == literal
    assert addr.host_port(host, 8740) == f"{literal}:8740"


def test_http_url():
    assert addr.http_url("http", "fd00::1", 8740, "/v1/hosts") == "http://[fd00::1]:8740/v1/hosts"


@pytest.mark.parametrize("url, shown", [
    ("http://admin:secret@198.18.0.1:8740/v1/hosts?token=t#x", "http://198.18.0.1:8740/v1/hosts"),
    ("https://[fd00::1]/", "https://[fd00::1]/"),
    ("http://coord.example", "http://coord.example"),
])
def test_display_url_drops_credentials_query_and_fragment(url, shown):
    assert addr.display_url(url) == shown
