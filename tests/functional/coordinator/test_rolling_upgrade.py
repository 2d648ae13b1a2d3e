"""A rolling upgrade on one etcd: old and new coordinator replicas serving together under traffic.

"Old" and "new" are this tree with and without one more schema migration: the new replicas run with the
setting `testing_migration`, which registers a migration the old one does not know (it adds a field to
every VM index record under /hs/vm/, and declares that prefix changed). Both are real processes with
their own elections on one real etcd, so what is shown is the upgrade machinery itself:

- the newest replica leads (the old leader steps down for it) and runs the migration, once, though two
  new replicas start at the same moment;
- a new replica serves only once its migration ran; the old one serves throughout;
- after the migration, the old replica refuses writes under the changed prefix (409 `schema_newer`) and
  writes nothing there, while its other writes and all reads go on;
- no request on either replica gets a 5xx.

It does not show that a real migration keeps the data readable for older code: that is each migration's
own rule (coordinator/domain/schema.py).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from coordinator.client import ApiClientError, Client
from coordinator.domain.migrations import TESTING_RUNS
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from testbed.coordinators import Coordinator

pytestmark = pytest.mark.real


class Traffic:
    """Reads and writes against one replica until stopped; every answer's status counted by operation."""

    def __init__(self, api: Client, name: str, host: str, l3: str):
        self.api, self.name, self.host, self.l3 = api, name, host, l3
        self.seen: Counter[tuple[str, int]] = Counter()
        self.created: list[str] = []
        self.refused: list[tuple[str, str]] = []  # (operation, code) of 409 schema_newer answers
        self.stop = asyncio.Event()
        self._n = itertools.count()

    async def _one(self, op: str, call) -> None:  # noqa: ANN001
        try:
            status, body = await call
        except ApiClientError as e:
            status, body = e.status, None
            if e.code == "schema_newer":
                self.refused.append((op, e.code))
        self.seen[(op, status)] += 1
        if op == "vm create" and status == 201:
            self.created.append(body["uuid"])

    async def run(self) -> None:
        while not self.stop.is_set():
            i = next(self._n)
            vm = {"name": f"{self.name}-{i}", "host_uuid": self.host, "l3_network_uuids": [self.l3], "state": "Stopped"}
            await self._one("vm create", self.api.call("POST", "/v1/vms", vm))
            l2 = {"name": f"{self.name}-l2-{i}", "physical_interface": f"{self.name}{i}"}  # one L2 per interface
            await self._one("l2 create", self.api.call("POST", "/v1/l2-networks", l2))
            await self._one("vm list", self.api.call("GET", "/v1/vms"))
            await self._one("host get", self.api.call("GET", f"/v1/hosts/{self.host}"))
            await asyncio.sleep(0.05)

    def errors(self) -> dict[tuple[str, int], int]:
        return {k: n for k, n in self.seen.items() if k[1] >= 500}


async def _etcd(etcd) -> tuple[dict, list, list]:  # noqa: ANN001
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        schema = await store.get(keys.SCHEMA)
        runs, _ = await store.list(TESTING_RUNS)
        index, _ = await store.list(keys.VM_INDEX)
        return schema.value if schema else {}, runs, index
    finally:
        await store.close()


async def test_old_and_new_replicas_serve_together_and_the_migration_runs_once(run, etcd, token):
    old = Coordinator(run, etcd, token, name="old", leader_ttl=2).start()
    new = [Coordinator(run, etcd, token, name=f"new{i}", leader_ttl=2, testing_migration="true") for i in range(2)]
    async with Client(old.url, token) as api:
        host = await api.post("/v1/hosts", {"name": "upgrade-host", "address": "198.18.0.9"})
        l2 = await api.post("/v1/l2-networks", {"name": "upgrade", "physical_interface": "eth0"})
        l3 = await api.post("/v1/l3-networks", {"name": "upgrade", "l2_uuid": l2["uuid"], "cidr": "198.19.0.0/16"})
        before = [(await api.post("/v1/vms", {"name": f"before-{i}", "host_uuid": host["uuid"], "state": "Stopped",
                                              "l3_network_uuids": [l3["uuid"]]}))["uuid"] for i in range(5)]
        on_old = Traffic(api, "old", host["uuid"], l3["uuid"])
        old_task = asyncio.create_task(on_old.run())
        with ThreadPoolExecutor(2) as pool:  # both new replicas at once: one migrates, both wait for it
            await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(pool, c.start, 60) for c in new))
        async with Client(new[0].url, token) as api_new:
            on_new = Traffic(api_new, "new", host["uuid"], l3["uuid"])
            new_task = asyncio.create_task(on_new.run())
            await asyncio.sleep(3)
            on_old.stop.set()
            on_new.stop.set()
            await asyncio.gather(old_task, new_task)
            leader = await api_new.get("/v1/leader")
            schema, runs, index = await _etcd(etcd)
            listed = {vm["uuid"] for vm in (await api_new.get("/v1/vms"))["vms"]}
    for c in (old, *new):
        c.stop()

    assert on_old.errors() == {} and on_new.errors() == {}, (on_old.seen, on_new.seen)
    assert leader["leader"] in ("new0", "new1")
    assert schema["version"] == 2 and [m["name"] for m in schema["migrations"]] == ["testing-vm-index-created-revision"]
    assert len(runs) == 1  # applied once, though two new replicas started together
    # the old replica: refused VM creations once the data was migrated, kept writing elsewhere and reading
    assert on_old.refused and {op for op, _ in on_old.refused} == {"vm create"}
    assert on_old.seen[("l2 create", 201)] > 0 and on_old.seen[("vm list", 200)] > 0
    assert on_new.seen[("vm create", 201)] > 0 and ("vm create", 409) not in on_new.seen
    # nothing it refused was written; everything it and the new replica acknowledged is there
    assert listed == {*before, *on_old.created, *on_new.created}
    stamped = {e.key.rsplit("/", 1)[1] for e in index if "created_revision" in e.value}
    assert set(before) <= stamped
