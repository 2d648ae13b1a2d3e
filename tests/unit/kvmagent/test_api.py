"""The agent's own API on loopback: bearer token, health, Prometheus metrics, applied state."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentkit.journal import Journal
from agentkit.link import Link
from agentkit.model import HostFacts
from kvmagent import api
from kvmagent.agent import Reconciler
from kvmagent.errors import BridgeError
from kvmagent.view import HostView

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
async def agent(tmp_path):
    comp = Comp()
    rec = Reconciler([comp])
    link = Link("http://127.0.0.1:9", "host1", TOKEN, Journal(tmp_path), lambda: HostFacts(hostname="h"),
                rec.on_state)
    app = api.make_app(TOKEN)
    app[api.RECONCILER], app[api.LINK] = rec, link
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
    assert 'hoststack_reconcile_errors_total{component="bridges"} 1' in text
    assert "hoststack_applied_revision 5" in text and "hoststack_link_connected 0" in text
    state = await (await client.get("/v1/state", headers=AUTH)).json()
    assert state["rev"] == 5 and state["l2_networks"] == ["a"]
