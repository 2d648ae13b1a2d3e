"""backup: seconds for `hs-ctl backup` of an etcd holding 100,000 keys, against a bare `etcdctl snapshot save`
of the same etcd; then the restore path's parts against a bare `etcdctl snapshot restore`.

The keys are a large cloud's worth of what the coordinator writes for 20,000 VMs: per VM its desired record (a
VmSpec as the API stores it), its index, its address, its MAC and its observed record. Both sides run as a fresh
process, as a scheduled job does, and write to the same directory. Ours is the `hs-ctl` of a control node: the
HostStack wheel installed into a venv as the deployer installs it (no pip, compiled, and without the host's
site-packages, as the control node's spec says), not this tree's editable install (whose import hook costs ~7 ms of
imports at every interpreter start that a node does not pay), and run with PYTHONDONTWRITEBYTECODE as the timer's
unit runs it (a read-only /opt). Ours reads the coordinator's etcd settings, runs `etcdctl snapshot save` itself,
hashes the file as etcdctl writes it, checks etcd's embedded sha256, writes the checksum file, prunes by name and
records the backup in etcd (`etcdctl txn`, started with the snapshot). A third side, a Python process of the same
venv that does nothing but run the same etcdctl, shows the floor any Python command pays for its interpreter. Each
side runs once untimed (so that none pays for a cold page cache alone), then ROUNDS times, taking turns at going
first, second and last; the times are medians, and a ratio is the median of the rounds' own ratios (the sides of a
round ran under the same load, which drifts on a shared machine: six rounds and a ratio of medians did not hold it
to better than ±0.1 here).

Restore: ours verifies the file (checksum file, etcd's hash, `etcdctl snapshot status`), unpacks it with
`etcdctl snapshot restore`, seals it (a new timeline written by an etcd nothing else reaches) and waits for
etcd to serve on it (hs-ctl restore's parts, without the service manager a control node has); the peer is
the bare unpack.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from agentkit.model import NicSpec, VmSpec
from coordinator.ctl import install, restore
from coordinator.ctl.settings import CtlSettings
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn
from deployer.wheelhouse import hoststack_wheel
from testbed.etcd import Etcd
from testbed.netns import Run

VMS = 20_000  # x 5 keys
ROUNDS = 15  # each side five times in each place of a round
BATCH = 100  # keys per transaction while filling (etcd allows 128 operations)


def vm_keys(i: int) -> list[tuple[str, object]]:
    vm, nic, host, l3, l2 = uuid.uuid4().hex, uuid.uuid4().hex, f"host{i % 500:04d}", f"l3{i % 40:04d}", "l2flat"
    ip, mac = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", f"fa:16:3e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:" \
        f"{i & 255:02x}"
    spec = VmSpec(uuid=vm, name=f"web-{i:05d}", memory_mb=2048, userdata="#cloud-config\nhostname: web\n",
                  nics=[NicSpec(uuid=nic, l3_uuid=l3, mac=mac, ip=ip, default=True)])
    return [(keys.desired_for(host, f"vm/{vm}"), spec.model_dump(mode="json")), (keys.vm_index(vm), {"host": host}),
            (keys.ipam(l3, ip), {"vm": vm, "nic": nic}), (f"/hs/mac/{l2}/{mac}", {"vm": vm}),
            (keys.observed("vm", vm), {"state": "Running", "host": host, "at": time.time(), "console": 5900 + i % 100})]


async def fill(endpoint: str) -> int:
    store = Store(endpoint)
    await store.connect()
    items = [kv for i in range(VMS) for kv in vm_keys(i)]

    async def worker(start: int) -> None:
        for at in range(start, len(items), BATCH * 16):
            txn = Txn()
            for k, v in items[at:at + BATCH]:
                txn.put(k, v)
            await store.commit(txn)

    await asyncio.gather(*(worker(w * BATCH) for w in range(16)))
    count = await store.count(keys.ROOT)
    await store.close()
    return count


def node_venv(run: Run) -> Path:
    """A venv holding this tree's HostStack wheel, made as the deployer makes a node's
    (deployer.remote.host.install)."""
    cache, venv = run.path("wheels"), run.path("venv")
    cache.mkdir()
    wheel = hoststack_wheel(Path(__file__).resolve().parents[1], cache)
    system = ["--system-site-packages"] if install.WHEELS.system_site_packages else []
    subprocess.run(["/usr/bin/python3", "-m", "venv", *system, "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q", "--no-index",
                    "--no-deps", "--disable-pip-version-check", str(wheel)], check=True)
    return venv / "bin"


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """(wall seconds, stdout) of a fresh process."""
    t0 = time.monotonic()
    p = subprocess.run(argv, env=env, check=True, capture_output=True, text=True, timeout=600)
    return time.monotonic() - t0, p.stdout


def main() -> None:
    with Run() as run:
        etcd = Etcd(run).start()
        count = asyncio.run(fill(etcd.endpoint))
        out = run.path("backups")
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HS_COORDINATOR_CONFIG": "/nonexistent",
               "HS_COORDINATOR_ETCD": etcd.endpoint, "HS_COORDINATOR_ADMIN_TOKEN": "bench-admin-token-0000",
               "HS_CTL_CONFIG": "/nonexistent", "HS_CTL_BACKUP_DIR": str(out)}
        # the installed command, as the node's timer runs it (`python -m` would add runpy's ~8 ms)
        bin_dir = node_venv(run)
        hs_ctl = [str(bin_dir / "hs-ctl"), "backup", "--keep-amount", "1"]
        etcdctl = ["etcdctl", f"--endpoints={etcd.endpoint}", "snapshot", "save", str(out / "peer.db")]
        # The floor of any Python command that runs etcdctl: the interpreter's start and exit around it.
        python = [str(bin_dir / "python"), "-c", "import subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
                  "capture_output=True)", *etcdctl[:-1], str(out / "floor.db")]
        ours, streams, peer, floor = [], [], [], []

        def run_ours() -> None:
            seconds, report = timed(hs_ctl, env)
            ours.append(seconds)
            streams.append(float(report.split(" in ")[1].split(" s")[0]))  # the snapshot's part, as hs-ctl reports it

        def run_peer() -> None:
            peer.append(timed(etcdctl, env)[0])

        def run_floor() -> None:
            floor.append(timed(python, env)[0])

        for warm_up in (hs_ctl, etcdctl, python):  # not counted
            timed(warm_up, env)
        sides = [run_ours, run_peer, run_floor]
        for i in range(ROUNDS):
            for side in sides[i % 3:] + sides[:i % 3]:  # each goes first, second and last in turn
                side()
        backup = next(out.glob("hoststack-etcd-*.db"))
        print(f"{count} keys, {backup.stat().st_size / 1e6:.1f} MB; hs-ctl backup {_fmt(ours)} s (of which the "
              f"snapshot by etcdctl, hashed, checked and named: {_fmt(streams)} s; the rest is the process's start "
              f"and exit, pruning and the record), etcdctl snapshot save {_fmt(peer)} s; the snapshot part against "
              f"etcdctl: ratio {_ratio(streams, peer):.3f}; a Python process that only runs that etcdctl "
              f"{_fmt(floor)} s: ratio {_ratio(floor, peer):.3f}", file=sys.stderr)
        print(restore_times(run, backup), file=sys.stderr)
        print(f"backup: ours={statistics.median(ours):.3f} peer={statistics.median(peer):.3f} "
              f"ratio={_ratio(ours, peer):.3f}")


def _fmt(xs: list[float]) -> str:
    return "/".join(f"{x:.3f}" for x in xs)


def _ratio(xs: list[float], ys: list[float]) -> float:
    """The median of the rounds' own ratios."""
    return statistics.median(x / y for x, y in zip(xs, ys, strict=True))


def restore_times(run: Run, backup: os.PathLike[str]) -> str:
    """The restore path's parts with hs-ctl's own functions, and the bare unpack as its peer."""
    etcd = Etcd(run, name="restored")
    peer = f"http://127.0.0.1:{etcd.peer_port}"
    cfg = run.path("etcd.json")
    cfg.write_text(json.dumps({"name": etcd.name, "data-dir": str(run.path(f"{etcd.name}-data")),
                               "initial-advertise-peer-urls": peer,
                               "initial-cluster": f"{etcd.name}={peer}"}))
    s = CtlSettings(etcd_config=cfg)
    t0 = time.monotonic()
    restore.check(s, run.path("backups") / os.path.basename(backup))
    t1 = time.monotonic()
    m, data = restore.Member.load(cfg), run.path(f"{etcd.name}-data")
    restore.unpack(s, run.path("backups") / os.path.basename(backup), m, data)
    t2 = time.monotonic()
    restore.seal(s, run.path("backups") / os.path.basename(backup), m, data, dt.datetime.now(dt.UTC))
    t2s = time.monotonic()
    etcd.start()
    t3 = time.monotonic()
    bare = run.path("bare")
    bare_s = timed(["etcdctl", "snapshot", "restore", str(backup), "--data-dir", str(bare)], dict(os.environ))[0]
    shutil.rmtree(bare, ignore_errors=True)
    return (f"restore: verify={t1 - t0:.3f} unpack={t2 - t1:.3f} seal={t2s - t2:.3f} etcd ready={t3 - t2s:.3f} "
            f"total={t3 - t0:.3f} s; "
            f"peer (etcdctl snapshot restore) {bare_s:.3f} s")


if __name__ == "__main__":
    main()
