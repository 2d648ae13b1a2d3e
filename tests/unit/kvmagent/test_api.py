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



async def test_the_metrics_token_reads_metrics_and_health_only(tmp_path):
    """A scraper's credential cannot read the host's state, nor open a console or a volume."""
    rec = Reconciler([Comp()])
    app = api.make_app(TOKEN, "metrics-token-5678", lambda vm, kind: None, lambda: TOKEN)
    app[api.RECONCILER] = rec
    app[api.LINK] = Link("http://127.0.0.1:9", "host1", TOKEN, Journal(tmp_path), lambda: HostFacts(hostname="h"),
                         rec.on_state)
    scraper = {"Authorization": "Bearer metrics-token-5678"}
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/metrics", headers=scraper)).status == 200
        assert (await client.get("/health", headers=scraper)).status == 200
        for path, status in (("/v1/state", 401), ("/v1/consoles/vm1/vnc", 401),
                             ("/v1/migration/volumes/v1/manifest", 403)):
            assert (await client.get(path, headers=scraper)).status == status

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


async def test_refusals_are_counted_per_route_and_status(agent):
    """Wrong tokens, console and volume tickets, and a method no route takes: each a series a scraper sees."""
    client, _, _ = agent
    for path in ("/metrics", "/v1/state"):
        assert (await client.get(path, headers={"Authorization": "Bearer guessed-token-0000"})).status == 401
    forged = {"Authorization": "Ticket 1.forged"}
    assert (await client.get("/v1/consoles/vm1/vnc", headers=forged)).status == 403
    assert (await client.get("/v1/consoles/vm1/vnc")).status == 401
    wrong = {"Authorization": "Bearer 1.x"}
    assert (await client.get("/v1/migration/volumes/v1/manifest", headers=wrong)).status == 403
    assert (await client.post("/metrics", headers=AUTH)).status == 405  # raised by aiohttp, past no error middleware
    text = await (await client.get("/metrics", headers=AUTH)).text()
    requests = "hoststack_http_requests_total"
    assert promtext.value(text, requests, route="/metrics", method="GET", code="401") == 1
    assert promtext.value(text, requests, route="/v1/state", method="GET", code="401") == 1
    assert promtext.value(text, requests, route="/v1/consoles/{vm}/{kind}", method="GET", code="403") == 1
    assert promtext.value(text, requests, route="/v1/consoles/{vm}/{kind}", method="GET", code="401") == 1
    assert promtext.value(text, requests, route="/v1/migration/volumes/{uuid}/manifest", method="GET",
                          code="403") == 1
    assert promtext.value(text, requests, route="unmatched", method="POST", code="405") == 1
    assert promtext.value(text, "hoststack_http_request_seconds_count", route="/metrics", method="GET") == 1
