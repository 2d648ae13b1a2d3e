"""Simulated hosts on one physical L2, each running a real `FlatnetService` in its own process.

Topology: a switch namespace with a bridge; each host namespace has `eth0` plugged into it and the
L2 bridges kvmagent would create. The service process enters only the host's network namespace
(`nsenter --net`), so the namespaces it creates are visible to everyone, as on a real host. It is
driven over stdin/stdout with one JSON line per command (`python -m testbed.flatnethost`).
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from pyroute2 import netns as pr_netns

from agentkit import logs
from agentkit.model import DnsRecord, L2Spec, L3Spec, VmSpec
from agentkit.proc import run as run_cmd
from testbed.netns import Netns, Run, kill_namespace

T = TypeVar("T")


class Switch:
    """The physical network: one bridge in its own namespace."""

    def __init__(self, run: Run, role: str = "sw"):
        self.run = run
        self.ns = run.netns(role)
        self.bridge = "sw0"
        self.ns.ip("link", "add", self.bridge, "type", "bridge")
        self.ns.ip("link", "set", self.bridge, "up")
        self.ports = 0

    def plug(self, other: Netns, ifname: str, mac: str | None = None) -> None:
        """A cable from `other` (device `ifname`) to a new switch port."""
        self.ports += 1
        port = f"p{self.ports}"
        self.run.veth(other, ifname, self.ns, port)
        if mac:
            other.ip("link", "set", ifname, "address", mac)
        self.ns.ip("link", "set", port, "master", self.bridge)


class SimHost:
    """A host namespace: `eth0` on the switch, plus the L2 bridges (kvmagent's job on a real host)."""

    def __init__(self, run: Run, role: str, switch: Switch):
        self.run = run
        self.role = role
        self.ns = run.netns(role)
        self.switch = switch
        switch.plug(self.ns, "eth0")

    def add_bridge(self, l2: L2Spec) -> None:
        """The L2's bridge with its uplink; a VLAN uplink is simulated by a cable of that name."""
        self.ns.ip("link", "add", l2.bridge, "type", "bridge")
        if l2.uplink != "eth0":
            self.switch.plug(self.ns, l2.uplink)
        self.ns.ip("link", "set", l2.uplink, "master", l2.bridge)
        self.ns.ip("link", "set", l2.uplink, "up")
        self.ns.ip("link", "set", l2.bridge, "up")


# the flat services' per-guest limits turned off: for benchmarks of raw speed and for fuzzing the codec
NO_GUEST_LIMITS: dict[str, Any] = {"guest_pps": 0, "dhcp_mac_rate": 0, "dhcp_notice_rate": 0}


class FlatnetHost:
    """A `FlatnetService` process inside a host namespace; `apply` returns its own timings.

    `settings` override `FlatnetSettings` fields; `metadata` (MetadataSettings fields) plugs the metadata
    server in, as kvmagent does; `nofile` sets the process's descriptor limit (kvmagent's unit used to
    leave 1,024). Lease reports are kept by the process (`reports()`), as the agent's journal would take them.
    """

    def __init__(self, host: SimHost, prefix: str | None = None, table: str = "hsflatnet",
                 settings: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
                 nofile: int | None = None):
        self.host = host
        self.prefix = prefix or f"{host.run.prefix}-{host.role}-"
        self.log_path = host.run.path(f"flatnet-{host.role}.log")
        log = open(self.log_path, "ab")  # noqa: SIM115
        options = {"settings": settings or {}, "metadata": metadata, "nofile": nofile}
        argv = ["nsenter", f"--net=/run/netns/{host.ns.name}", sys.executable, "-m", "testbed.flatnethost",
                self.prefix, table, json.dumps(options)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,  # noqa: S603
                                     text=True, start_new_session=True)
        host.run.procs.append(self.proc)

    def _call(self, doc: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        if stdin is None or stdout is None:
            raise RuntimeError("the flatnet service was started without its pipes")
        stdin.write(json.dumps(doc) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"flatnet service on {self.host.role} died; see its log")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"flatnet service on {self.host.role}: {reply.get('error')}")
        return reply

    def apply(self, l2s: list[L2Spec], l3s: list[L3Spec], vms: list[VmSpec],
              dns: list[DnsRecord]) -> dict[str, Any]:
        """Send the host's desired state; returns {"t0", "t1"}: monotonic clock around `apply()`."""
        return self._call({"op": "apply", "l2s": [x.model_dump() for x in l2s], "l3s": [x.model_dump() for x in l3s],
                           "vms": [x.model_dump() for x in vms], "dns": [x.model_dump() for x in dns]})

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._call({"op": "stats"})["stats"]
        return stats

    def host_stats(self) -> dict:
        """`FlatnetService.host_stats()`, the metadata server's per-L3 counters and the process's RSS (KiB)."""
        return self._call({"op": "host_stats"})["stats"]

    def reports(self) -> list[list]:
        """Every observed-state report so far: [kind, id, body]."""
        return self._call({"op": "reports"})["reports"]

    def close(self, clear: bool = True) -> None:
        """Stop the process. With `clear` (tests' teardown) its namespaces and rules are removed first by an
        apply of nothing, and any namespace left with its prefix is deleted even if that failed."""
        try:
            if self.proc.poll() is None:
                if clear:
                    self.apply([], [], [], [])
                self._call({"op": "close"})
        finally:
            self.host.run.stop(self.proc)
            if clear:
                for name in owned_namespaces(self.prefix):
                    kill_namespace(name)


class NetnsLoop:
    """An event loop on a thread that entered a host namespace: in-process services on a simulated host.

    Threads, sockets and subprocesses started from that loop live in the namespace; the rest of the test
    process does not. `run` executes a coroutine there and returns its result.
    """

    def __init__(self, netns: str):
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(netns,), name=f"loop-{netns}", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _main(self, netns: str) -> None:
        pr_netns.setns(netns, flags=0)
        self.loop = asyncio.new_event_loop()
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def owned_namespaces(prefix: str) -> list[str]:
    lines = run_cmd(["ip", "netns", "list"]).stdout.splitlines()
    return [line.split()[0] for line in lines if line.startswith(prefix)]


class _Served:
    """What the driven process serves: the flat service, its metadata plugin and the reports it made."""

    def __init__(self, prefix: str, table: str, options: dict[str, Any]):
        from flatnet.metadata import MetadataService, MetadataSettings
        from flatnet.service import FlatnetService
        from flatnet.settings import FlatnetSettings

        self.reports: list[list[Any]] = []
        self.metadata = MetadataService(MetadataSettings(**options["metadata"])) if options["metadata"] is not None \
            else None
        settings = FlatnetSettings(**{**options["settings"], "netns_prefix": prefix, "nft_table": table})
        self.service = FlatnetService(settings, plugins=[self.metadata] if self.metadata else [],
                                      report=lambda kind, ident, body: self.reports.append([kind, ident, body]))

    async def host_stats(self) -> dict[str, Any]:
        rss = int(next(x for x in open("/proc/self/status") if x.startswith("VmRSS:")).split()[1])
        return {**await self.service.host_stats(), "rss_kib": rss,
                "metadata": self.metadata.stats() if self.metadata else {}}


async def _serve(prefix: str, table: str, options: dict[str, Any]) -> None:
    """The driven process: one JSON command per stdin line, one JSON reply per stdout line."""
    if options.get("nofile"):
        resource.setrlimit(resource.RLIMIT_NOFILE, (options["nofile"], options["nofile"]))
    served = _Served(prefix, table, options)
    service = served.service
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            await service.close()
            return
        doc = json.loads(line)
        try:
            reply = await _command(served, doc)
        except Exception as e:  # reported to the test, which fails with it
            reply = {"ok": False, "error": repr(e)}
        print(json.dumps(reply), flush=True)
        if doc["op"] == "close":
            return


async def _command(served: _Served, doc: dict[str, Any]) -> dict[str, Any]:
    service = served.service
    if doc["op"] == "host_stats":
        return {"ok": True, "stats": await served.host_stats()}
    if doc["op"] == "reports":
        return {"ok": True, "reports": served.reports}
    if doc["op"] == "apply":
        state = (
            {x["uuid"]: L2Spec.model_validate(x) for x in doc["l2s"]},
            {x["uuid"]: L3Spec.model_validate(x) for x in doc["l3s"]},
            {x["uuid"]: VmSpec.model_validate(x) for x in doc["vms"]},
            {f"{x['l3_uuid']}/{x['name']}/{x['ip']}": DnsRecord.model_validate(x) for x in doc["dns"]},
        )
        t0 = time.monotonic()
        await service.apply(*state)
        return {"ok": True, "t0": t0, "t1": time.monotonic()}
    if doc["op"] == "stats":
        return {"ok": True, "stats": service.stats()}
    if doc["op"] == "close":
        await service.close()
        return {"ok": True}
    return {"ok": False, "error": f"unknown op {doc['op']!r}"}


if __name__ == "__main__":
    logs.setup("INFO")
    asyncio.run(_serve(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else
                       {"settings": {}, "metadata": None, "nofile": None}))
