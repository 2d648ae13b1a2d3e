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


@pytest.mark.parametrize("address", ["198.18.0.1", "fd00::1", "kvm-1", "kvm-1.example.com", "1e100.net"])
def test_a_host_address_is_an_ip_or_a_dns_name(address):
    assert addr.check_host_address(address) == address


@pytest.mark.parametrize("address", ["$(reboot);id", "../../etc/passwd", "127.0.0.256", "1.2.3", "-oProxyCommand=x",
                                     "a b", "fe80::1%eth0", "-h", "host-.example", "a..b", "", "x" * 254, "é.example"])
def test_anything_else_is_refused(address):
    with pytest.raises(ValueError, match="neither an IP address nor a DNS name"):
        addr.check_host_address(address)


@pytest.mark.parametrize("url", ["http://u:p@[fd00::1]:8080/a.iso?x=1", "https://images.example/a%20b.iso",
                                 "file:///srv/images/a.iso", "http://198.18.0.1:8080/a.qcow2", "https://[fd00::1]/a",
                                 "https://images.example/a", "file:///srv/images/a.raw",
                                 "http://user:pw@images.example/a?sig=x"])
def test_a_source_url_that_can_be_fetched_is_taken(url):
    assert addr.check_source_url(url) == url


@pytest.mark.parametrize("url, schemes, why", [
    ("http://h:99999/a.iso", ("http",), "Port out of range"),
    ("http://127.0.0.1:99999/a", None, "Port out of range"),
    ("http://[::1/a.iso", ("http",), "Invalid IPv6 URL"),
    ("http://[::1/a", None, "Invalid IPv6 URL"),
    ("http://bad host/a.iso", ("http",), "whitespace or control"),
    ("http://a\x01b/a.iso", ("http",), "whitespace or control"),
    ("https:///a.iso", ("https",), "needs a host"),
    ("http:///a", None, "needs a host"),
    ("http://a..b/a", None, "an empty label or one over 63 characters"),
    (f"http://{'a' * 64}.example/a", None, "an empty label or one over 63 characters"),
    ("file:///etc/passwd", ("http", "https"), "scheme 'file' is not http or https"),
])
def test_a_source_url_no_one_can_fetch_from_is_refused_saying_why(url, schemes, why):
    """`schemes` None: the default ones; each of those URLs raised a ValueError deep inside the cephagent's
    import before it was refused here (a bug there, so a crash)."""
    with pytest.raises(ValueError, match=why):
        addr.check_source_url(url) if schemes is None else addr.check_source_url(url, schemes)
