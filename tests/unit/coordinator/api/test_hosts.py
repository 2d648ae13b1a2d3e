"""What a host's heartbeat tells of its agent's clock."""

from __future__ import annotations

import email.utils

import pytest
from aiohttp.test_utils import make_mocked_request

from coordinator.api.hosts import _clock
from coordinator.domain import hosts


@pytest.mark.parametrize("fraction", [0.05, 0.45, 0.55, 0.95])
def test_an_agent_whose_clock_agrees_shows_no_offset_whatever_the_fraction_of_its_second(monkeypatch, fraction):
    """The Date header names whole seconds (the sender's time cut): its middle is the best guess."""
    sent = 1_800_000_000 + fraction
    request = make_mocked_request("POST", "/", headers={"Date": email.utils.formatdate(sent, usegmt=True)})
    monkeypatch.setattr(hosts.time, "time", lambda: sent + 0.002)  # arrives 2 ms later
    assert hosts._beat("r1", _clock(request))["clock_offset"] == 0


def test_a_date_that_does_not_parse_tells_nothing():
    assert _clock(make_mocked_request("POST", "/", headers={"Date": "yesterday"})) is None
    assert _clock(make_mocked_request("POST", "/")) is None
