"""migrate: LocalStorage volume migration between two hosts, against rsync of the same files (ZStack's way).

ours: MiB/s of the volume's files (a 1 GiB data volume of random bytes in two files: a snapshot and the
active file on it) from `POST /v1/volumes/{uuid}/migrate` to the coordinator showing the volume on the
other host and Ready there (the target pulled both files from the source's agent with a ticket, hashed
them as they came, checked them against the source's sha256, opened the chain with qemu-img, saved the
record, reported it verified, got it as its own and reported it Ready). peer: `rsync -a` of the same
directory, pulled the same way (run on the target host, over ssh to an sshd in the source host's
namespaces, as ZStack 1.x's LocalStorage migration runs rsync over ssh), no compression (the bytes are
random). Two simulated KVM hosts (namespaces joined by a
veth switch, each with its own tmpfs at the storage path); rounds alternate direction and who goes
first; the median of each. Then a running tiny guest on a SharedMountPoint moves live: libvirt's downtime
(the guest paused) and the time from the API call to the coordinator showing it on the other host.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import time
from pathlib import Path

from agentkit.proc import run as run_cmd
from coordinator.client import Client
from testbed import guest_image
from testbed.coordinators import Coordinator, admin_token
from testbed.etcd import Etcd
from testbed.kvmhost import KvmHost, mounting_hosts
from testbed.netns import Run
from testbed.ports import free_port

MiB = 1 << 20
SIZE = 1 << 30
ROUNDS = 4
SSHD = """ListenAddress {address}
Port 2222
HostKey {key}
PermitRootLogin yes
PubkeyAuthentication yes
AuthorizedKeysFile {authorized}
PasswordAuthentication no
UsePAM no
StrictModes no
PidFile none
"""


def enter(host: KvmHost) -> list[str]:
    """argv prefix: the host's network and mount namespaces (where its agent and its files are)."""
    assert host.libvirt.proc is not None
    return ["nsenter", f"--net=/run/netns/{host.ns.name}", f"--mount=/proc/{host.libvirt.proc.pid}/ns/mnt"]


def start_sshd(r: Run, host: KvmHost) -> Path:
    """sshd in the host's namespaces, root by key only; the client key's path."""
    d = r.path(f"ssh-{host.name}")
    d.mkdir()
    run_cmd(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")])
    run_cmd(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client")])
    (d / "authorized").write_text((d / "client.pub").read_text())
    (d / "sshd_config").write_text(SSHD.format(address=host.address.ip, key=d / "host", authorized=d / "authorized"))
    r.popen([*enter(host), "/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], log_name=f"sshd-{host.name}")
    time.sleep(0.5)
    return d / "client"


def rsync(source: KvmHost, target: KvmHost, key: Path, folder: Path, dest: Path) -> float:
    """MiB/s of rsync pulling `folder` from `source` into `dest` on `target`."""
    ssh = f"ssh -p 2222 -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    t = time.perf_counter()
    run_cmd([*enter(target), "rsync", "-a", "-e", ssh, f"root@{source.address.ip}:{folder}/", f"{dest}/"],
            timeout=600)
    took = time.perf_counter() - t
    size = sum(p.stat().st_size for p in target.inside(dest).glob("*.qcow2"))
    run_cmd([*enter(target), "rm", "-rf", str(dest)])
    return size / MiB / took


async def migrate(api: Client, volume: str, target: KvmHost, files: Path) -> float:
    """MiB/s of migrating `volume` to `target` (its files' bytes over the time to it being there)."""
    t = time.perf_counter()
    await api.post(f"/v1/volumes/{volume}/migrate", {"dest_host_uuid": target.uuid})
    while True:  # until the target reports it Ready (usable there)
        v = await api.get(f"/v1/volumes/{volume}")
        if v["host_uuid"] == target.uuid and v["status"] == "Ready" and v["observed"]["host"] == target.uuid:
            break
        if v["progress"] and v["progress"]["error"]:
            raise RuntimeError(v["progress"]["error"])
        await asyncio.sleep(0.02)
    took = time.perf_counter() - t
    return sum(p.stat().st_size for p in target.inside(files).glob("f*.qcow2")) / MiB / took


async def prepare(api: Client, hosts: list[KvmHost], local: Path, run_dir: Path) -> str:
    """A 1 GiB volume on the first host: random bytes, half before a snapshot and half after."""
    ps = await api.post("/v1/primary-storage", {"name": "local", "type": "LocalStorage", "url": str(local)})
    while True:
        shown = (await api.get(f"/v1/primary-storage/{ps['uuid']}"))["hosts"]
        if all((shown.get(h.uuid) or {}).get("capacity") for h in hosts):
            break
        await asyncio.sleep(0.2)
    vol = await api.post("/v1/volumes", {"name": "bench", "primary_storage_uuid": "local", "size": SIZE,
                                         "host_uuid": hosts[0].uuid})
    while (await api.get(f"/v1/volumes/{vol['uuid']}"))["status"] != "Ready":
        await asyncio.sleep(0.2)
    noise = run_dir / "noise.raw"
    noise.write_bytes(os.urandom(SIZE // 2))
    folder = hosts[0].inside(local / "volumes" / vol["uuid"])
    run_cmd(["qemu-io", "-f", "qcow2", "-c", f"write -s {noise} 0 {SIZE // 2}", str(folder / "f0.qcow2")], timeout=300)
    await api.post(f"/v1/volumes/{vol['uuid']}/snapshots", {"name": "half"})
    while not ((await api.get(f"/v1/volumes/{vol['uuid']}"))["observed"] or {}).get("snapshots"):
        await asyncio.sleep(0.2)
    run_cmd(["qemu-io", "-f", "qcow2", "-c", f"write -s {noise} {SIZE // 2} {SIZE // 2}", str(folder / "f1.qcow2")],
            timeout=300)
    noise.unlink()
    return str(vol["uuid"])


async def live(api: Client, hosts: list[KvmHost], smp: Path) -> tuple[float, float]:
    """A running tiny guest on a SharedMountPoint moved live: libvirt's downtime (ms, the guest paused) and the
    time from the API call to the coordinator showing it on the other host (ms)."""
    guest = guest_image.build()
    await api.post("/v1/primary-storage", {"name": "smp", "type": "SharedMountPoint", "url": str(smp)})
    while True:
        shown = (await api.get("/v1/primary-storage/smp"))["hosts"]
        if all((shown.get(h.uuid) or {}).get("capacity") for h in hosts):
            break
        await asyncio.sleep(0.2)
    vm = await api.post("/v1/vms", {"name": "roamer", "host_uuid": hosts[0].uuid, "primary_storage_uuid": "smp",
                                    "data_disks": [8 * MiB], "kernel": {
                                        "kernel": str(guest.kernel), "initrd": str(guest.initrd),
                                        "cmdline": guest.cmdline("hold")}}, wait="120")
    await asyncio.sleep(5)  # booted
    t = time.perf_counter()
    await api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": hosts[1].uuid, "live": True})
    while (await api.get(f"/v1/vms/{vm['uuid']}"))["host_uuid"] != hosts[1].uuid:
        await asyncio.sleep(0.02)
    switch = (time.perf_counter() - t) * 1000
    stats = hosts[1].libvirt.virsh("domjobinfo", "--completed", vm["uuid"])
    downtime = float(re.search(r"Total downtime:\s+(\d+)", stats).group(1))  # type: ignore[union-attr]
    return downtime, switch


async def measure(r: Run, co: Coordinator, token: str, hosts: list[KvmHost], local: Path) -> tuple[list, list]:
    keys = {h.name: start_sshd(r, h) for h in hosts}
    ours, peer = [], []
    async with Client(co.url, token) as api:
        volume = await prepare(api, hosts, local, r.dir)
        files = local / "volumes" / volume
        for i in range(ROUNDS):
            source, target = (hosts[0], hosts[1]) if i % 2 == 0 else (hosts[1], hosts[0])
            dest = local / f"rsync-{i}"
            if i % 2:
                peer.append(await asyncio.to_thread(rsync, source, target, keys[source.name], files, dest))
            ours.append(await migrate(api, volume, target, files))
            if not i % 2:  # the volume is on the target now: rsync it back the other way, same bytes
                peer.append(await asyncio.to_thread(rsync, target, source, keys[target.name], files, dest))
        downtime, switch = await live(api, hosts, r.path("smp"))
    print(f"migrate-live: downtime={downtime:.0f} ms (libvirt: the guest paused), {switch:.0f} ms from the API call "
          "to the VM on the new host", file=sys.stderr)
    return ours, peer


def main() -> None:
    with Run() as r:
        etcd = Etcd(r).start()
        token, port = admin_token(), free_port()
        co = Coordinator(r, etcd, token, name="coord-bench", heartbeat_timeout=3, heartbeat_interval=1,
                         kvmagent_port=port, live_migration_uri="qemu+tcp://{address}/system").start()
        local, shared, smp, common = (r.path(n) for n in ("ls-bench", "smp-backing", "smp", "host"))
        for d in (local, shared, smp, common):
            d.mkdir()
        hosts = mounting_hosts(r, co, token, ["kvm1", "kvm2"], [(shared, smp)], api_port=port,
                               mounts=[("-t", "tmpfs", "-o", "size=4g", "tmpfs", str(local)),
                                       ("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(common))],
                               log_level="WARNING", vm={"serial_log_dir": str(common / "serial"),
                                                        "console_dir": str(common / "consoles")})
        try:
            ours, peer = asyncio.run(measure(r, co, token, hosts, local))
        finally:
            for h in hosts:
                h.close()
    print(f"volume migration MiB/s ({SIZE // MiB} MiB in two files): ours={[round(x) for x in ours]} "
          f"rsync over ssh={[round(x) for x in peer]}", file=sys.stderr)
    o, p = statistics.median(ours), statistics.median(peer)
    print(f"migrate: ours={o:.0f} peer={p:.0f} ratio={o / p:.2f}")


if __name__ == "__main__":
    main()
