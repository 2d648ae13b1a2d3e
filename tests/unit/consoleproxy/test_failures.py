"""The budget of refused tokens per client address: through the real proxy on loopback (the test bed's token
table as the coordinator, counting what it is asked), and the budget alone on a fake clock."""

from __future__ import annotations

import asyncio
import ipaddress

import aiohttp
import pytest

from agentkit.consoles import new_token
from agentkit.errors import Forbidden
from consoleproxy.errors import CoordinatorUnavailable, TokenUnknown, TooManyFailedTokens
from consoleproxy.failures import ADDRESSES, FailureBudget, source
from testbed import promtext
from testbed.consolelab import ConsoleLab

METRICS_TOKEN = "scraper-token-0123456789"


async def test_an_address_that_sent_too_many_refused_tokens_is_refused_without_asking_the_coordinator():
    """Each refused token of ours cost the coordinator a request, without end; now an address's refusals are
    budgeted (3 here), past them it is told 429 (the websocket 4429) even for a good token, and the coordinator
    is not asked. Granted tokens and junk ones (never asked about) spend nothing."""
    lab = await ConsoleLab.start({}, metrics_token=METRICS_TOKEN, token_failures=3)  # no console is opened
    asked = lab.grants.asked
    good = lab.grants.issue("vm1", "serial")
    async with aiohttp.ClientSession() as s:
        for token in [good, "junk"] * 5 + [new_token(), lab.grants.issue("vm2", "serial"),
                                          lab.grants.issue("vm1", "serial", ttl=-1)]:
            async with s.get(lab.url("vm1", "serial", token, ws=False)) as r:
                assert r.status == (200 if token == good else 403), token
        assert len(asked) == 8
        async with s.get(lab.url("vm1", "serial", new_token(), ws=False)) as r:
            body = await r.json()
            assert (r.status, body["error"]["code"]) == (429, "too_many_failed_tokens")
            assert body["error"]["message"].startswith("too many refused console tokens from 127.0.0.1 (3 per 60 s); "
                                                       "try again in ")
        async with s.ws_connect(lab.url("vm1", "serial", good), headers={"X-Forwarded-For": "192.0.2.1"}) as ws:
            assert (await ws.receive()).data == 4429  # the peer's budget: a header the client writes is no address
        assert len(asked) == 8
        async with s.get(f"{lab.proxy_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as r:
            text = await r.text()
    assert promtext.value(text, "hoststack_console_refused_total", kind="serial", reason="too_many_failed_tokens") == 2
    assert promtext.value(text, "hoststack_console_refused_total", kind="vnc", reason="too_many_failed_tokens") == 0
    await lab.close()


def refuse(budget: FailureBudget, address: str, error: Exception | None = None) -> None:
    """One resolution from `address` that raises `error` (a refusal of the token: unknown)."""
    with pytest.raises(type(error or TokenUnknown())), budget.spend(address):
        raise error or TokenUnknown()


def test_a_budget_comes_back_evenly_over_its_window_and_is_each_addresss_own():
    now = [100.0]
    budget = FailureBudget(3, 60, clock=lambda: now[0])
    for error in (TokenUnknown(), Forbidden("another console's"), TokenUnknown()):
        refuse(budget, "192.0.2.1", error)
    with pytest.raises(TooManyFailedTokens, match="try again in 20 s"), budget.spend("192.0.2.1"):
        pass
    with budget.spend("192.0.2.2"):  # another address: its own budget
        pass
    now[0] += 20  # one failure back
    refuse(budget, "192.0.2.1")
    with pytest.raises(TooManyFailedTokens):
        refuse(budget, "192.0.2.1")


def test_what_is_not_the_tokens_fault_spends_nothing():
    """A good token, the coordinator unable to tell (503), a resolution that did not end: given back."""
    budget = FailureBudget(2, 60, clock=lambda: 100.0)
    for _ in range(10):
        with budget.spend("192.0.2.1"):
            pass
        refuse(budget, "192.0.2.1", CoordinatorUnavailable(why="etcd down"))
        with pytest.raises(asyncio.CancelledError), budget.spend("192.0.2.1"):
            raise asyncio.CancelledError
    refuse(budget, "192.0.2.1")
    refuse(budget, "192.0.2.1")
    with pytest.raises(TooManyFailedTokens), budget.spend("192.0.2.1"):
        pass


def test_resolutions_at_once_take_their_place_before_they_ask():
    """Many tokens from one address resolving at the same time cannot all reach the coordinator."""
    budget = FailureBudget(2, 60, clock=lambda: 100.0)
    with budget.spend("192.0.2.1"), budget.spend("192.0.2.1"):
        with pytest.raises(TooManyFailedTokens), budget.spend("192.0.2.1"):
            pass


def test_an_ipv6_client_spends_its_64s_budget_and_an_ipv4_one_its_own_however_it_is_written():
    assert source("2001:db8:1:2:aaaa::1") == source("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source("2001:db8:1:3::1") != source("2001:db8:1:2::1")
    assert source("::ffff:192.0.2.1") == source("192.0.2.1") == "192.0.2.1"
    assert source(None) == ""


def test_a_spray_from_many_addresses_does_not_grow_the_table():
    budget = FailureBudget(1, 60, clock=lambda: 100.0)
    for n in range(ADDRESSES + 100):
        with pytest.raises((TokenUnknown, TooManyFailedTokens)), budget.spend(str(ipaddress.IPv4Address(n))):
            raise TokenUnknown()
    assert budget._buckets.keys <= ADDRESSES + 1  # the table's own, then one shared by the newcomers
