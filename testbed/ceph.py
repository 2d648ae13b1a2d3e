"""A real one-node Ceph cluster (mon + memstore osd + mgr) on free loopback ports inside the run's directory.

Why a memstore OSD: it needs no block device and starts in seconds; `paxos propose interval = 0.1`
makes pool and auth changes commit fast, `mon election timeout = 1` lets a second mon join in ~2 s.
The mgr is needed for capacity figures (without it every stats call returns 0); it sends them to the
mon every second here (`mon mgr digest period`), every 5 s by default. Daemon output goes to log files
in the run's directory (a pipe would hang them). A second mon can be added on other loopback ports and
removed again, as operators do on real clusters. Everything lives under `run.path(name)` and is
stopped/removed by `stop()` or the run's `close()`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import rados

from agentkit.proc import run
from testbed.netns import Run
from testbed.ports import free_port

GiB = 1 << 30
# mgr modules a test cluster never uses (the always-on ones cannot be disabled); skipping them roughly
# halves the time until the mgr is available
MGR_DISABLED = ("alerts diskprediction_local influx insights iostat localpool mirroring nfs osd_perf_query osd_support "
                "prometheus restful selftest snap_schedule stats telegraf test_orchestrator zabbix")

_CONF = """\
[global]
fsid = {fsid}
mon host = {mon_host}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {d}/$name.keyring
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
run dir = {d}/run
crash dir = {d}/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 1
mgr stats period = 1
mon mgr digest period = 1
mgr initial modules =
mgr disabled modules = {mgr_disabled}
[mon]
mon data = {d}/mon-$id
keyring = {d}/mon-$id/keyring
mon cluster log file = {d}/log/cluster.log
paxos propose interval = 0.1
mon election timeout = 1
[osd]
osd data = {d}/osd$id
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd memory target = 1073741824
osd max object name len = 256
osd max object namespace len = 64
[mgr]
mgr data = {d}/mgr-$id
"""


@dataclass
class Mon:
    """One mon daemon: its name, msgr2 and legacy (v1) loopback ports, and its process."""

    name: str
    v2_port: int
    v1_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def addrv(self) -> str:
        return f"[v2:127.0.0.1:{self.v2_port},v1:127.0.0.1:{self.v1_port}]"

    @property
    def addr(self) -> str:
        """host:port of the legacy protocol, as monUrls (`monPort`) and libvirt `<host>` give it."""
        return f"127.0.0.1:{self.v1_port}"


class CephCluster:
    """Start with `start()`; `conf`, `keyring` and `client` are what a cephagent is configured with."""

    client = "client.admin"

    def __init__(self, run_: Run, name: str = "ceph", memstore_bytes: int = 4 * GiB):
        self.run = run_
        self.dir: Path = run_.path(name)
        self.conf = self.dir / "ceph.conf"
        self.keyring = self.dir / f"{self.client}.keyring"
        self.fsid = str(uuid.uuid4())
        self.memstore_bytes = memstore_bytes
        self.mons: dict[str, Mon] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.admin: rados.Rados | None = None

    def _tool(self, *argv: str) -> str:
        return run([*argv, "-c", str(self.conf)], timeout=60).stdout

    def _daemon(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        p = self.run.popen([*argv, "-f", "-c", str(self.conf)], log_name=f"{self.dir.name}-{name}")
        self.procs.append(p)
        return p

    def mon_command(self, prefix: str, inbuf: bytes = b"", **args: object) -> bytes:
        """A mon command as the admin client; raises with Ceph's message on failure."""
        assert self.admin is not None
        answer: tuple[int, bytes, str] = self.admin.mon_command(
            json.dumps({"prefix": prefix, "format": "json", **args}), inbuf, timeout=30)
        ret, out, err = answer
        if ret != 0:
            raise RuntimeError(f"ceph {prefix} {args}: {ret} {err}")
        return out

    def start(self, timeout: float = 60) -> CephCluster:
        deadline = time.monotonic() + timeout
        for sub in ("run", "log", "crash"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        first = Mon("a", free_port(), free_port())
        self.conf.write_text(_CONF.format(fsid=self.fsid, mon_host=first.addrv, d=self.dir,
                                          memstore_bytes=self.memstore_bytes, mgr_disabled=MGR_DISABLED))
        mon_keyring = self.dir / "mon.keyring"
        run(["ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.", "--cap", "mon",
             "allow *"])
        caps = [arg for daemon in ("mon", "osd", "mds", "mgr") for arg in ("--cap", daemon, "allow *")]
        run(["ceph-authtool", "--create-keyring", str(self.keyring), "--gen-key", "-n", self.client, *caps])
        run(["ceph-authtool", str(mon_keyring), "--import-keyring", str(self.keyring)])
        monmap = self.dir / "monmap"
        run(["monmaptool", "--create", "--fsid", self.fsid, "--addv", first.name, first.addrv, str(monmap)])
        self._start_mon(first, monmap)
        self.admin = rados.Rados(conffile=str(self.conf), name=self.client)
        self.admin.connect(timeout=max(1, int(deadline - time.monotonic())))
        self._start_osd()
        self._start_mgr()
        self._wait(deadline, "osd.0 up, the mgr available and its first capacity figures", self._ready)
        return self

    def _start_mon(self, mon: Mon, monmap: Path) -> None:
        self._tool("ceph-mon", "--mkfs", "-i", mon.name, "--monmap", str(monmap),
                   "--keyring", str(self.dir / "mon.keyring"))
        mon.proc = self._daemon(f"mon-{mon.name}", "ceph-mon", "-i", mon.name, "--public-addrv", mon.addrv)
        self.mons[mon.name] = mon

    def _start_osd(self) -> None:
        osd_uuid, key = str(uuid.uuid4()), run(["ceph-authtool", "--gen-print-key"]).stdout.strip()
        out = self.mon_command("osd new", json.dumps({"cephx_secret": key}).encode(), uuid=osd_uuid)
        osd_id = str(json.loads(out)["osdid"])
        run(["ceph-authtool", "--create-keyring", str(self.dir / f"osd.{osd_id}.keyring"), "--name",
             f"osd.{osd_id}", "--add-key", key])
        (self.dir / f"osd{osd_id}").mkdir(exist_ok=True)
        self._tool("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        self._daemon(f"osd{osd_id}", "ceph-osd", "-i", osd_id)

    def _start_mgr(self) -> None:
        out = self.mon_command("auth get-or-create", entity="mgr.x",
                               caps=["mon", "allow profile mgr", "osd", "allow *", "mds", "allow *"])
        entry = json.loads(out)[0]
        (self.dir / "mgr-x").mkdir(exist_ok=True)
        (self.dir / "mgr.x.keyring").write_text(f"[mgr.x]\n\tkey = {entry['key']}\n")
        self._daemon("mgr-x", "ceph-mgr", "-i", "x")

    def _ready(self) -> bool:
        """Started as an operator sees it: the OSD up and `ceph df` telling its size (the mgr's first digest
        comes a moment after it is available: until then every figure is 0)."""
        osds = json.loads(self.mon_command("osd dump"))["osds"]
        return bool(osds and osds[0]["up"] and json.loads(self.mon_command("mgr stat"))["available"]
                    and json.loads(self.mon_command("df"))["stats"]["total_bytes"] > 0)

    def _wait(self, deadline: float, what: str, ready: Callable[[], bool]) -> None:
        while time.monotonic() < deadline:
            dead = [p.args for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"ceph daemon exited: {dead}; logs in {self.run.dir}")
            if ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"ceph: timed out waiting for {what}; logs in {self.run.dir}")

    def quorum(self) -> list[str]:
        names: list[str] = json.loads(self.mon_command("quorum_status"))["quorum_names"]
        return names

    def add_mon(self, name: str = "b", timeout: float = 30) -> Mon:
        """A further mon daemon on fresh loopback ports; returns once it is in quorum."""
        mon = Mon(name, free_port(), free_port())
        monmap = self.dir / f"monmap-{name}"
        monmap.write_bytes(self.mon_command("mon getmap"))
        self._start_mon(mon, monmap)
        self._wait(time.monotonic() + timeout, f"mon.{name} in quorum", lambda: name in self.quorum())
        return mon

    def remove_mon(self, name: str, timeout: float = 30) -> None:
        """Take a mon out of the monmap, stop its daemon and delete its data."""
        mon = self.mons.pop(name)
        if mon.proc:  # a removed mon shuts itself down: that exit is expected
            self.procs.remove(mon.proc)
        self.mon_command("mon remove", name=name)
        self._wait(time.monotonic() + timeout, f"mon.{name} gone", lambda: name not in self.quorum())
        if mon.proc:
            self.run.stop(mon.proc)
        shutil.rmtree(self.dir / f"mon-{name}", ignore_errors=True)

    def stop(self) -> None:
        """Stop every daemon (mgr and osd before the mons) and delete the cluster's directory."""
        if self.admin is not None:
            self.admin.shutdown()
            self.admin = None
        for p in reversed(self.procs):
            self.run.stop(p)
        self.procs.clear()
        self.mons.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
