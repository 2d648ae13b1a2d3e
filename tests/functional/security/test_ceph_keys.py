"""The hypervisor never holds the Ceph admin key (issue 14): neither the KVM host's files nor etcd.

A real cluster, its cephagent over TLS, a TLS coordinator, and a KVM host running the real agent with
its own libvirtd: once Ceph primary and backup storage are added, the host has defined the cluster's
libvirt secret, and the key it got is the VM user's, whose caps name the HostStack pools only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import pytest

from agentkit.model import stream_key_ceph_secret
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from testbed.coordinators import Coordinator
from testbed.kvmhost import KvmHost
from testbed.pki import refuses_plain_http
from testbed.switch import Switch

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def tls_cephagent(ceph, pki):
    from testbed.cephagent import CephAgentProcess

    a = CephAgentProcess(ceph, pki=pki).start()
    yield a
    a.stop()


@pytest.fixture(scope="module")
def ceph_tls_coordinator(run, etcd, token, pki, tls_cephagent):
    c = Coordinator(run, etcd, token, name="coord-ceph-tls", pki=pki, cephagent_port=tls_cephagent.port,
                    cephagent_token=tls_cephagent.token).start()
    yield c
    c.stop()


def files_holding(roots: list[Path], secrets: list[bytes]) -> list[Path]:
    found = []
    for root in roots:
        for p in (root.rglob("*") if root.is_dir() else [root]):
            if p.is_file() and not p.is_symlink() and not p.is_socket():
                data = p.read_bytes()
                if any(s in data for s in secrets):
                    found.append(p)
    return found


async def test_the_hypervisor_never_holds_the_admin_key(run, ceph, ceph_tls_coordinator, etcd, tls_cephagent):
    co = ceph_tls_coordinator
    assert refuses_plain_http(tls_cephagent.listen, tls_cephagent.port)  # the coordinator reaches it over TLS only
    kvm = KvmHost(run, Switch(run), "cephkeys")
    async with co.client() as api:
        await kvm.register(api)
        kvm.start(co)
        try:
            mon = f"root:pw@127.0.0.1:22/?monPort={ceph.mons['a'].v1_port}"
            await api.post("/v1/ceph-backup-storage", {"name": "keys-bs", "monUrls": [mon]})
            ps = await api.post("/v1/ceph-primary-storage", {"name": "keys-ps", "zone": "default", "monUrls": [mon]})
            deadline = time.monotonic() + 30
            while ps["secret_uuid"] not in kvm.libvirt.virsh("secret-list"):
                assert time.monotonic() < deadline, kvm.log()[-3000:]
                time.sleep(0.3)
            admin = json.loads(ceph.mon_command("auth get-key", entity="client.admin"))["key"]
            secrets = [admin.encode(), base64.b64decode(admin)]
            hypervisor = [kvm.libvirt.dir, kvm.state_dir, run.path("cephkeys-agent.log")]
            assert files_holding(hypervisor, secrets) == []
            store = Store(etcd.config())
            await store.connect()
            try:
                entries, _ = await store.list("/")
            finally:
                await store.close()
            assert not [e.key for e in entries if admin in json.dumps(e.value)]
            item = next(e.value for e in entries if e.key == keys.desired_all(stream_key_ceph_secret(ceph.fsid)))
            user = json.loads(ceph.mon_command("auth get", entity=f"client.{item['user']}"))[0]
            assert item["user"] != "admin" and item["key"] == user["key"]
            pools = {p["name"] for p in ps["pools"]}
            bs_pools = {p["name"] for p in (await api.get("/v1/ceph-backup-storage/keys-bs"))["pools"]}
            granted = {g.strip() for g in user["caps"]["osd"].split(",")}
            assert {f"profile rbd pool={p}" for p in pools} <= granted
            assert {f"profile rbd-read-only pool={p}" for p in bs_pools} <= granted
            assert all(g.split("pool=")[1] in pools | bs_pools for g in granted)  # nothing else
            assert set(user["caps"]) == {"mon", "osd"} and user["caps"]["mon"] == "profile rbd"
        finally:
            kvm.close()


async def test_each_cephagent_takes_its_own_token(ceph_tls_coordinator, tls_cephagent):
    """A mon host registered as a ceph host gets its own token, and the coordinator presents it to that host's
    agent (not the shared `cephagent_token`): until the agent runs with it, the agent refuses the coordinator."""
    async with ceph_tls_coordinator.client() as api:
        host = await api.post("/v1/hosts", {"name": "mon-own", "address": tls_cephagent.listen, "kind": "ceph"})
        issued = await api.post(f"/v1/hosts/{host['uuid']}/token", {"keep": tls_cephagent.token})
        assert issued["rotated"] and issued["token"] not in (host["token"], tls_cephagent.token)
        view = await api.get("/v1/ceph-backup-storage/keys-bs")
        assert view["status"] == "Disconnected"  # the agent still takes the shared token only
        tls_cephagent.stop()
        tls_cephagent.token = issued["token"]
        tls_cephagent.start()
        assert (await api.get("/v1/ceph-backup-storage/keys-bs"))["status"] == "Connected"
        deadline = time.monotonic() + 30
        while (await api.get("/v1/hosts/mon-own"))["state"] != "Connected":  # watched with its own token too
            assert time.monotonic() < deadline
            await asyncio.sleep(0.3)
