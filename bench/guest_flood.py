"""guest-flood: the victim VM's metadata p99 while a neighbour attacks every flat service at once, and quiet.

One simulated host runs the real flat services (DHCP, DNS, metadata) in their own process with 1,024
descriptors (the worst case: what the agent's unit used to leave it) and the default limits. The victim
asks for its `instance-id` every 20 ms on a new connection, as the issue measured it; the attacker, a VM
on the same host and L3, runs all of `testbed.attacks` at once: 20 connections pipelining user-data
requests they never read, 2,000 slow-reading connections, 50,000 RELEASE/DECLINE frames (half with the
victim's MAC), DNS over UDP as fast as it can and 500 TCP connections, all asking names the upstream
never answers in time.

Quiet and attacked phases alternate (`ROUNDS` of each, `SECONDS` of polling each); a failed request
counts as its timeout, so a p99 with more than 1 % failures is the timeout. The attacker's processes run
in sessions whose autogroup has nice 19: on a real host a guest burns its own vCPUs, not the agent's
core; here the two cores are shared, and without it the figures would measure the attacker's CPU, not
the server's fairness. The attack itself is as fast as the attacker can make it, so a server without
per-guest limits falls behind on a faster machine as on a slower one. Closing line:
`guest-flood: ours=<p99 ms under attack> peer=<p99 ms quiet> ratio=<ours/peer>`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from agentkit.proc import arun
from testbed import attacks
from testbed.guestlab import GuestLab
from testbed.netns import Run
from testbed.victim import Latencies

ROUNDS, SECONDS, WARMUP = 4, 6.0, 2.0
USERDATA = "#cloud-config\n" + "# the victim's data\n" * 800  # 16 KiB, as the pipelined replies in the issue


def attack_argvs(lab: GuestLab, seconds: float) -> list[list[str]]:
    attacker, victim, dns = lab.ns["attacker"], lab.ns["victim"], lab.l3.dhcp_address
    return [attacks.argv("metadata-pipeline", conns=20, seconds=seconds),
            attacks.argv("metadata-hold", conns=2000, seconds=seconds),
            attacks.argv("dhcp", count=50_000, seconds=seconds, ifname=attacker.ifname, mac=attacker.nic.mac,
                         ip=attacker.nic.ip, forge=victim.nic.mac),
            attacks.argv("dns-udp", host=dns, seconds=seconds),
            attacks.argv("dns-tcp", host=dns, conns=500, seconds=seconds)]


def start_attack(lab: GuestLab, seconds: float, round_: int) -> list[subprocess.Popen]:
    procs = []
    for i, argv in enumerate(attack_argvs(lab, seconds)):
        proc = lab.ns["attacker"].ns.popen(argv, log_name=f"attack-{round_}-{i}")
        Path(f"/proc/{proc.pid}/autogroup").write_text("19")  # its own session: the guest's own CPU
        procs.append(proc)
    return procs


async def poll(lab: GuestLab) -> Latencies:
    """The victim's poller, a process of its own inside the victim's namespace (and session)."""
    argv = lab.ns["victim"].ns.argv([sys.executable, "-m", "testbed.victim", str(SECONDS), lab.vms["victim"].uuid])
    out = await arun(argv, timeout=SECONDS + 30)
    return Latencies(json.loads(out.stdout))


async def phase(lab: GuestLab, attacked: bool, round_: int) -> Latencies:
    procs = start_attack(lab, SECONDS + 2 * WARMUP, round_) if attacked else []
    await asyncio.sleep(WARMUP)
    latencies = await poll(lab)
    for proc in procs:
        await asyncio.get_running_loop().run_in_executor(None, proc.wait, 60)
    await asyncio.sleep(1.0)  # what the attack left behind is swept or times out before the next quiet phase
    return latencies


async def bench(lab: GuestLab) -> tuple[Latencies, Latencies]:
    quiet, attacked = Latencies(), Latencies()
    for round_ in range(ROUNDS):
        for under_attack in (False, True) if round_ % 2 == 0 else (True, False):
            got = await phase(lab, under_attack, round_)
            print(f"round {round_} {'attacked' if under_attack else 'quiet'}: {got.summary()}", file=sys.stderr)
            (attacked if under_attack else quiet).samples += got.samples
    return attacked, quiet


def main() -> None:
    with Run() as run:
        lab = GuestLab.create(run, "g")
        lab.add_vm("victim", 10, userdata=USERDATA)
        lab.add_vm("attacker", 11, userdata=USERDATA)
        lab.start(nofile=1024)
        try:
            rss = lab.svc.host_stats()["rss_kib"] if lab.svc else 0
            attacked, quiet = asyncio.run(bench(lab))
            assert lab.svc is not None
            stats = lab.svc.host_stats()
            print(f"service: RSS {rss} -> {stats['rss_kib']} KiB, guest frames dropped by the kernel "
                  f"{stats['guest_pps_dropped']}, lease reports {stats['lease_reports']} of {stats['lease_changes']} "
                  f"changes, metadata {stats['metadata'][lab.l3.uuid]}, dns {lab.svc.stats()[lab.l3.uuid]['dns']}",
                  file=sys.stderr)
        finally:
            lab.close()
    print(f"victim metadata, quiet: {quiet.summary()}")
    print(f"victim metadata, attacked: {attacked.summary()}")
    ours, peer = attacked.p99() * 1000, quiet.p99() * 1000
    print(f"guest-flood: ours={ours:.1f} peer={peer:.1f} ratio={ours / peer:.2f}")


if __name__ == "__main__":
    main()
