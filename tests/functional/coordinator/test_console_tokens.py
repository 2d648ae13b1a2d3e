"""Console tokens at a real coordinator on etcd, with hosts played through their own endpoints (connect,
heartbeat, observed) by their host tokens: a URL on a connected proxy, grants for that proxy only, a
ticket the VM's host verifies with its own token, and a VM that moved gets a tunnel to its new host."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentkit.consoles import check_ticket
from agentkit.tickets import host_key
from coordinator.client import ApiClientError, Client

pytestmark = pytest.mark.real


async def host(api: Client, coordinator, name: str, address: str, kind: str = "kvm") -> tuple[dict, Client]:
    """A registered host that connected and so is Connected; and a client with its host token."""
    h = await api.post("/v1/hosts", {"name": name, "address": address, "kind": kind})
    agent = Client(coordinator.url, h["token"])
    await agent.post(f"/v1/hosts/{h['uuid']}/connect", {"hostname": name, "agent_version": "test"})
    return h, agent


async def running(agent: Client, host_uuid: str, vm: str, seq: int) -> None:
    body = {"state": "Running", "console": {"protocol": "vnc", "kinds": ["vnc", "serial"]}}
    await agent.post(f"/v1/hosts/{host_uuid}/observed",
                     {"events": [{"seq": seq, "kind": "vm", "id": vm, "body": body, "at": time.time()}]})


async def test_tokens_grants_tickets_and_migration(api, coordinator):
    a, agent_a = await host(api, coordinator, "con-a", "198.18.7.2")
    b, agent_b = await host(api, coordinator, "con-b", "198.18.7.3")
    vm = await api.post("/v1/vms", {"name": "con-vm", "host_uuid": a["uuid"]})
    with pytest.raises(ApiClientError) as e:
        await api.post(f"/v1/vms/{vm['uuid']}/console", {})
    assert e.value.status == 409 and e.value.code == "not_running"
    await running(agent_a, a["uuid"], vm["uuid"], 1)
    with pytest.raises(ApiClientError) as e:
        await api.post(f"/v1/vms/{vm['uuid']}/console", {})
    assert e.value.status == 503 and e.value.code == "no_console_proxy"
    with pytest.raises(ApiClientError) as e:
        await api.post(f"/v1/vms/{vm['uuid']}/console", {"kind": "spice"})
    assert e.value.status == 409 and e.value.field == "kind"

    proxy, as_proxy = await host(api, coordinator, "con-proxy", "198.18.7.9", kind="consoleproxy")
    await agent_a.post(f"/v1/hosts/{a['uuid']}/heartbeat")  # Connected (3 s here), as a console wants
    opened = await api.post(f"/v1/vms/{vm['uuid']}/console", {})
    assert opened["proxy"] == "con-proxy"
    assert opened["url"] == f"http://198.18.7.9:8743/consoles/{vm['uuid']}/vnc?token={opened['token']}"
    assert 55 < opened["expires_at"] - time.time() <= 60

    grant = await as_proxy.post(f"/v1/console-proxies/{proxy['uuid']}/grants", {"token": opened["token"]})
    assert grant["tunnel_url"] == f"ws://198.18.7.2:8741/v1/consoles/{vm['uuid']}/vnc"
    assert 55 < grant["expires_in"] <= 60 and grant["expires_at"] == opened["expires_at"]  # the proxy goes by the first
    check_ticket(host_key(agent_a.token), vm["uuid"], "vnc", grant["ticket"], time.time())  # host A's agent
    with pytest.raises(ApiClientError) as e:  # another host's token does not resolve tokens for this proxy
        await agent_b.post(f"/v1/console-proxies/{proxy['uuid']}/grants", {"token": opened["token"]})
    assert e.value.status == 401
    with pytest.raises(ApiClientError) as e:
        await as_proxy.post(f"/v1/console-proxies/{proxy['uuid']}/grants", {"token": "forged"})
    assert e.value.status == 404 and e.value.code == "token_unknown"

    await agent_b.post(f"/v1/hosts/{b['uuid']}/heartbeat")  # Connected, as placement wants
    await api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": b["uuid"]})
    moved = await as_proxy.post(f"/v1/console-proxies/{proxy['uuid']}/grants", {"token": opened["token"]})
    assert moved["tunnel_url"].startswith("ws://198.18.7.3:8741/")
    check_ticket(host_key(agent_b.token), vm["uuid"], "vnc", moved["ticket"], time.time())

    await api.delete(f"/v1/vms/{vm['uuid']}")  # the token outlives its VM: the proxy is told it is gone
    with pytest.raises(ApiClientError) as e:
        await as_proxy.post(f"/v1/console-proxies/{proxy['uuid']}/grants", {"token": opened["token"]})
    assert (e.value.status, e.value.code) == (404, "console_gone") and vm["uuid"] in e.value.message

    await as_proxy.post(f"/v1/hosts/{proxy['uuid']}/heartbeat")
    listed = (await api.get("/v1/console-proxies"))["console_proxies"]
    assert [(p["name"], p["state"], p["agent_version"], p["url"]) for p in listed] == [
        ("con-proxy", "Connected", "test", "http://198.18.7.9:8743")]
    with pytest.raises(ApiClientError) as e:  # reconnect wants the deploy settings (none here)
        await api.post(f"/v1/console-proxies/{proxy['uuid']}/reconnect")
    assert e.value.status == 409 and e.value.code == "not_configured"
    for c in (agent_a, agent_b, as_proxy):
        await c.close()


async def test_no_console_while_the_vms_host_is_disconnected(api, coordinator):
    kvm, agent = await host(api, coordinator, "con-gone", "198.18.7.4")
    proxy, as_proxy = await host(api, coordinator, "con-proxy2", "198.18.7.10", kind="consoleproxy")
    vm = await api.post("/v1/vms", {"name": "con-gone-vm", "host_uuid": kvm["uuid"]})
    await running(agent, kvm["uuid"], vm["uuid"], 1)
    assert (await api.post(f"/v1/vms/{vm['uuid']}/console", {}))["token"]
    while (await api.get(f"/v1/hosts/{kvm['uuid']}"))["state"] == "Connected":  # no heartbeat: 3 s here
        await as_proxy.post(f"/v1/hosts/{proxy['uuid']}/heartbeat")  # the proxy stays
        await asyncio.sleep(0.5)
    await as_proxy.post(f"/v1/hosts/{proxy['uuid']}/heartbeat")
    with pytest.raises(ApiClientError) as e:
        await api.post(f"/v1/vms/{vm['uuid']}/console", {})
    assert (e.value.status, e.value.code) == (409, "not_running")
    assert e.value.message == ("VM con-gone-vm's host is Disconnected: its console cannot be reached until the host "
                               "is back")
    await agent.post(f"/v1/hosts/{kvm['uuid']}/heartbeat")
    assert (await api.post(f"/v1/vms/{vm['uuid']}/console", {}))["token"]
    for c in (agent, as_proxy):
        await c.close()
