"""Deploy support in the coordinator API (real etcd): SSH credentials at rest, host tokens, `hs deploy` errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from coordinator.client import ApiClientError, Client
from coordinator.etcd import keys
from coordinator.etcd.store import Store

pytestmark = pytest.mark.real
SSH = {"user": "admin", "port": 2222, "password": "s3cret-Pa55"}


async def raw_record(etcd, uuid: str) -> dict:
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        return (await store.get(keys.host(uuid))).value
    finally:
        await store.close()


async def test_ssh_credentials_are_encrypted_at_rest_and_never_read_back(api, etcd):
    host = await api.post("/v1/hosts", {"name": "ssh-a", "address": "198.18.0.21", "ssh": SSH})
    assert host["ssh_credentials"] is True and host["token"]
    for answer in (await api.get(f"/v1/hosts/{host['uuid']}"), await api.get("/v1/hosts")):
        assert SSH["password"] not in json.dumps(answer) and "ssh_secret" not in json.dumps(answer)
    record = await raw_record(etcd, host["uuid"])
    assert SSH["password"] not in json.dumps(record) and "admin" not in json.dumps(record)
    assert await api.post(f"/v1/hosts/{host['uuid']}/ssh/reveal") == {**SSH, "key_file": None}

    await api.put("/v1/hosts/ssh-a/ssh", {"key_file": "/root/.ssh/id_ed25519"})
    assert await api.post("/v1/hosts/ssh-a/ssh/reveal") == {"user": "root", "port": 22, "password": None,
                                                            "key_file": "/root/.ssh/id_ed25519"}
    bare = await api.post("/v1/hosts", {"name": "ssh-b", "address": "198.18.0.22"})
    assert bare["ssh_credentials"] is False
    with pytest.raises(ApiClientError) as e:
        await api.post("/v1/hosts/ssh-b/ssh/reveal")
    assert e.value.status == 404 and "no stored SSH credentials" in e.value.message
    with pytest.raises(ApiClientError) as e:
        await api.put("/v1/hosts/ssh-b/ssh", {"user": "root; rm -rf /", "password": "x"})
    assert e.value.status == 400 and e.value.field == "user"


async def heartbeat(coordinator, uuid: str, token: str) -> int:
    async with Client(coordinator.url, token) as agent:
        try:
            return (await agent.call("POST", f"/v1/hosts/{uuid}/heartbeat", json={}))[0]
        except ApiClientError as e:
            return e.status


async def test_token_rotation_voids_the_old_token_and_keep_changes_nothing(api, coordinator):
    host = await api.post("/v1/hosts", {"name": "tok-a", "address": "198.18.0.23"})
    uuid, first = host["uuid"], host["token"]
    assert await heartbeat(coordinator, uuid, first) == 204
    new = await api.post(f"/v1/hosts/{uuid}/token", {})
    assert new["rotated"] and new["token"] != first
    assert await heartbeat(coordinator, uuid, first) == 401
    assert await heartbeat(coordinator, uuid, new["token"]) == 204
    assert await api.post(f"/v1/hosts/{uuid}/token", {"keep": new["token"]}) == {"token": new["token"],
                                                                                "rotated": False}
    assert await heartbeat(coordinator, uuid, new["token"]) == 204
    stale = await api.post("/v1/hosts/tok-a/token", {"keep": first})  # by name; an invalid keep gets a new one
    assert stale["rotated"] and stale["token"] not in (first, new["token"])
    assert await heartbeat(coordinator, uuid, new["token"]) == 401
    async with Client(coordinator.url, stale["token"]) as agent:  # host tokens cannot mint tokens
        with pytest.raises(ApiClientError) as e:
            await agent.post(f"/v1/hosts/{uuid}/token", {})
    assert e.value.status == 401


async def test_an_expired_token_is_not_kept(api, coordinator, etcd):
    """A host whose agent was off longer than its token lasts: a deploy that offers the token gets a new one
    (kept, the agent could never connect again)."""
    host = await api.post("/v1/hosts", {"name": "tok-old", "address": "198.18.0.29"})
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        entry = await store.get(keys.host(host["uuid"]))
        await store.put(entry.key, {**entry.value, "token_expires": time.time() - 1})
    finally:
        await store.close()
    answer = await api.post(f"/v1/hosts/{host['uuid']}/token", {"keep": host["token"]})
    assert answer["rotated"] and answer["token"] != host["token"]
    assert await heartbeat(coordinator, host["uuid"], answer["token"]) == 204


async def test_each_ceph_host_gets_a_token_of_its_own(api):
    a = await api.post("/v1/hosts", {"name": "mon-a", "address": "198.18.0.24", "kind": "ceph"})
    b = await api.post("/v1/hosts", {"name": "mon-b", "address": "198.18.0.27", "kind": "ceph"})
    ta, tb = [await api.post(f"/v1/hosts/{h['uuid']}/token", {}) for h in (a, b)]
    assert ta["rotated"] and tb["rotated"] and ta["token"] != tb["token"]
    assert await api.post("/v1/hosts/mon-a/token", {"keep": ta["token"]}) == {"token": ta["token"], "rotated": False}


async def test_a_kvm_agents_api_token_is_its_own_kept_encrypted_until_rotated(api, coordinator, etcd):
    host = await api.post("/v1/hosts", {"name": "agent-api", "address": "198.18.0.28"})
    first = await api.post(f"/v1/hosts/{host['uuid']}/agent-api-token", {})
    assert first["api_token"] != host["token"] and first["metrics_token"] is None  # no scrapers configured here
    assert await api.post("/v1/hosts/agent-api/agent-api-token", {}) == first  # every deploy: the same one
    assert first["api_token"] not in json.dumps(await raw_record(etcd, host["uuid"]))
    rotated = await api.post(f"/v1/hosts/{host['uuid']}/agent-api-token", {"rotate": True})
    assert rotated["api_token"] not in (first["api_token"], host["token"])
    assert await heartbeat(coordinator, host["uuid"], host["token"]) == 204  # the host's own token: untouched
    async with Client(coordinator.url, rotated["api_token"]) as agent_api:  # it acts for the host nowhere here
        assert await heartbeat(coordinator, host["uuid"], rotated["api_token"]) == 401
        with pytest.raises(ApiClientError) as e:
            await agent_api.post(f"/v1/hosts/{host['uuid']}/agent-api-token", {})
    assert e.value.status == 401
    proxy = await api.post("/v1/hosts", {"name": "cp-api", "address": "198.18.0.30", "kind": "consoleproxy"})
    answer = await api.post(f"/v1/hosts/{proxy['uuid']}/agent-api-token", {})
    assert answer == {"api_token": None, "metrics_token": None}  # a console proxy's API takes the scrapers' alone
    for name, address, kind in (("mon-api", "198.18.0.29", "ceph"), ("is-api", "198.18.0.31", "imagestore")):
        other = await api.post("/v1/hosts", {"name": name, "address": address, "kind": kind})
        assert await api.post(f"/v1/hosts/{other['uuid']}/agent-api-token", {}) == answer  # so do theirs


def hs(coordinator, token, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", coordinator.url, f"--token={token}",
                           *args], capture_output=True, text=True, timeout=60)


async def test_cli_deploy_refuses_before_touching_a_host(api, coordinator, token):
    nossh = await api.post("/v1/hosts", {"name": "cli-nossh", "address": "198.18.0.25"})
    await api.post("/v1/hosts", {"name": "cli-mon", "address": "198.18.0.26", "kind": "ceph", "ssh": SSH})
    p = hs(coordinator, token, "deploy", "kvmagent", "cli-nossh")
    assert p.returncode == 1 and "cli-nossh has no stored SSH credentials" in p.stderr and not p.stdout
    p = hs(coordinator, token, "deploy", "kvmagent", "cli-mon")
    assert p.returncode == 1 and "cli-mon is a ceph host" in p.stderr
    p = hs(coordinator, token, "deploy", "kvmagent", "no-such-host", "--password", "x")
    assert p.returncode == 1 and "no-such-host does not exist" in p.stderr
    p = hs(coordinator, token, "deploy", "ssh", "cli-nossh", "--password", "pw")
    assert (p.returncode, p.stdout) == (0, f"stored ssh of host cli-nossh ({nossh['uuid']})\n")
    shown = json.loads(hs(coordinator, token, "--json", "host", "show", "cli-nossh").stdout)
    assert shown["ssh_credentials"] is True and "pw" not in json.dumps({k: v for k, v in shown.items()
                                                                         if k not in ("uuid", "name")})
    token_line = hs(coordinator, token, "deploy", "token", "cli-nossh").stdout
    assert "rotated: True" in token_line


async def test_the_deploy_lock_admits_one_deployer_at_a_time_and_expires_with_its_holder(api):
    host = await api.post("/v1/hosts", {"name": "lock-a", "address": "198.18.0.27"})
    path = f"/v1/hosts/{host['uuid']}/deploy-lock"
    first = await api.post(path, {"holder": "alice@ops (pid 1)", "ttl": 5})
    assert first["holder"] == "alice@ops (pid 1)" and first["lock"]
    with pytest.raises(ApiClientError) as e:
        await api.post("/v1/hosts/lock-a/deploy-lock", {"holder": "the coordinator"})
    assert (e.value.status, e.value.code) == (409, "locked")
    assert "host lock-a is being deployed by alice@ops (pid 1)" in e.value.message
    assert (await api.get(path))["holder"] == "alice@ops (pid 1)"
    # a host of another kind at its address is deployed over the same SSH: it waits too
    proxy = await api.post("/v1/hosts", {"name": "lock-a-proxy", "address": "198.18.0.27", "kind": "consoleproxy"})
    proxy_path = f"/v1/hosts/{proxy['uuid']}/deploy-lock"

    for _ in range(3):  # renewed past its ttl: still held
        await asyncio.sleep(2.5)
        await api.put(f"{path}/{first['lock']}", {})
    with pytest.raises(ApiClientError):
        await api.post(path, {"holder": "bob"})
    with pytest.raises(ApiClientError) as e:
        await api.post(proxy_path, {"holder": "bob"})
    assert (e.value.status, e.value.code) == (409, "locked")
    assert e.value.message.startswith(f"host lock-a ({host['uuid']}), at the address of host lock-a-proxy, is being "
                                      "deployed by alice@ops (pid 1)")
    await api.delete(f"{path}/{first['lock']}")
    await api.delete(f"{path}/{first['lock']}")  # releasing twice changes nothing

    second = await api.post(path, {"holder": "bob", "ttl": 5})  # free again; now let it expire
    deadline = time.monotonic() + 15
    while True:
        try:
            await api.get(path)
        except ApiClientError as e:
            assert e.status == 404 and "not being deployed" in e.message
            break
        assert time.monotonic() < deadline, "an abandoned lock outlived its ttl"
        await asyncio.sleep(0.5)
    await api.delete(f"{proxy_path}/{(await api.post(proxy_path, {'holder': 'dave'}))['lock']}")  # its address's too
    with pytest.raises(ApiClientError) as e:
        await api.put(f"{path}/{second['lock']}", {})
    assert (e.value.status, e.value.code) == (404, "lock_lost")
    with pytest.raises(ApiClientError) as e:
        await api.post(path, {"holder": "carol", "ttl": 1})
    assert (e.value.status, e.value.field) == (400, "ttl")
    assert (await api.post(path, {"holder": "carol"}))["ttl"] == 30
