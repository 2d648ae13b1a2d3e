"""The agent's own API on loopback: bearer token, health, Prometheus metrics, applied state."""

from __future__ import annotations

import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentkit.consoles import issue_ticket
from agentkit.journal import Journal
from agentkit.link import Link
from agentkit.metrics import family
from agentkit.model import HostFacts
from agentkit.tickets import host_key
from kvmagent import api
from kvmagent.agent import Reconciler
from kvmagent.errors import BridgeError
from kvmagent.view import HostView
from testbed import promtext

TOKEN = "host-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Comp:
    name, after = "bridges", ()
    fail = False

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        if self.fail:
            raise BridgeError("eth9 not found")

    async def close(self) -> None:
        return None


@pytest.fixture
def guest_lines() -> list[str]:
    """What the flat services add to /metrics (nothing unless a test adds it)."""
    return []


@pytest.fixture
async def agent(tmp_path, guest_lines):
    comp = Comp()
    rec = Reconciler([comp])
    link = Link("http://127.0.0.1:9", "host1", TOKEN, Journal(tmp_path), lambda: HostFacts(hostname="h"),
                rec.on_state)
    app = api.make_app(TOKEN, None, lambda vm, kind: None, lambda: TOKEN)  # the API token as the host's, here
    app[api.RECONCILER], app[api.LINK] = rec, link

    async def guest() -> list[str]:
        return guest_lines
    app[api.GUEST_METRICS] = guest
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, rec, comp


async def test_every_endpoint_wants_the_token(agent):
    client, _, _ = agent
    r = await client.get("/health")
    assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
    for odd in ("Bearer é", "Bearer \u00ff\u00fe", f"Bearer {TOKEN} x"):
        r = await client.get("/metrics", headers={"Authorization": odd})
        assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"


async def test_health_metrics_and_state_follow_the_pipeline(agent):
    client, rec, comp = agent
    rec.view = HostView.from_state({"l2/a": None}, 5)
    assert await rec.apply_one(comp, rec.view)
    r = await client.get("/health", headers=AUTH)
    assert r.status == 200 and (await r.json())["applied_rev"] == 5
    comp.fail = True
    assert not await rec.apply_one(comp, rec.view)
    r = await client.get("/health", headers=AUTH)
    assert r.status == 503 and (await r.json())["errors"] == {"bridges": "BridgeError: eth9 not found"}
    text = await (await client.get("/metrics", headers=AUTH)).text()
    assert promtext.value(text, "hoststack_reconcile_errors_total", component="bridges") == 1
    assert promtext.value(text, "hoststack_applied_revision") == 5
    assert promtext.value(text, "hoststack_link_connected") == 0
    assert promtext.value(text, "hoststack_reconciles_total") == 2
    state = await (await client.get("/v1/state", headers=AUTH)).json()
    assert state["rev"] == 5 and state["l2_networks"] == ["a"]


async def test_metrics_carry_the_flat_services_counters(agent, guest_lines):
    client, _, _ = agent
    guest_lines += family("hoststack_flatnet_events_total", "events", "counter", ("l3", "service", "event"),
                          [(("a", "dns", "rate_limited"), 7)])
    text = await (await client.get("/metrics", headers=AUTH)).text()
    assert promtext.value(text, "hoststack_flatnet_events_total", l3="a", service="dns", event="rate_limited") == 7


async def test_the_console_tunnel_wants_a_ticket_not_the_token(agent):
    """The host token does not open consoles; a ticket keyed with it opens one VM's console of one kind."""
    client, _, _ = agent
    r = await client.get("/v1/consoles/vm1/serial", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 401 and "console ticket" in (await r.json())["error"]["message"]
    expires = int(time.time()) + 60
    ticket = issue_ticket(host_key(TOKEN), "vm1", "serial", expires)
    r = await client.get("/v1/consoles/vm1/serial", headers={"Authorization": f"Ticket {ticket}"})
    assert r.status == 404  # a valid ticket, but this host has no such console
    r = await client.get("/v1/consoles/vm2/serial", headers={"Authorization": f"Ticket {ticket}"})
    assert r.status == 403
    stale = issue_ticket(host_key(TOKEN), "vm1", "serial", expires - 3600)
    r = await client.get("/v1/consoles/vm1/serial", headers={"Authorization": f"Ticket {stale}"})
    assert r.status == 403 and (await r.json())["error"]["message"].startswith("console ticket refused: expired")
