"""A guest attacking the metadata server of its host; its neighbour keeps getting answers (issue 13: 1, 6, 7).

The real flat services run in their own process with 1,024 descriptors (what kvmagent's unit used to
leave it); the attacker is `testbed.attacks` in its VM namespace, the victim polls `instance-id` every
20 ms on a new connection. Limits are the defaults unless a test says otherwise.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

import pytest

from agentkit.addr import METADATA_ADDRESS
from agentkit.netns import netns_socket
from testbed import attacks, nshttp
from testbed.cpu import cpu_seconds
from testbed.guestlab import GuestLab
from testbed.netns import Run
from testbed.victim import INSTANCE_ID, Latencies, poll_metadata

pytestmark = pytest.mark.real
VICTIM_DATA = "#cloud-config\n# the victim's secret\n" + "#" * 16000 + "\n"  # a 16 KiB reply, as in the issue
P99 = 0.2  # seconds: the benchmark holds it under 20 ms; here other jobs share the cores


def log_lines(path: Path, pattern: str, since: int) -> int:
    with open(path, "rb") as f:
        f.seek(since)
        return sum(1 for line in f if re.search(pattern.encode(), line))


def make_lab(run: Run, role: str, settings: dict | None = None, **metadata) -> GuestLab:
    lab = GuestLab.create(run, role)
    lab.add_vm("victim", 10, userdata=VICTIM_DATA)
    lab.add_vm("attacker", 11, userdata="#cloud-config\n# the attacker's own\n")
    lab.start(settings=settings, metadata=metadata, nofile=1024)
    return lab


@pytest.fixture(scope="module")
def lab(run):
    lab = make_lab(run, "m")
    yield lab
    lab.close()


async def attacked(lab: GuestLab, kind: str, seconds: float, **options) -> Latencies:
    """Run one attack from the attacker's namespace while the victim polls; the victim's latencies."""
    proc = lab.ns["attacker"].ns.popen(attacks.argv(kind, seconds=seconds, **options), log_name=f"attack-{kind}")
    await asyncio.sleep(1.0)  # the attack is under way
    latencies = await poll_metadata(lab.ns["victim"].ns.name, seconds - 2, expect=lab.vms["victim"].uuid)
    await asyncio.get_running_loop().run_in_executor(None, proc.wait, seconds + 30)
    lab.run.stop(proc)
    return latencies


async def test_pipelined_requests_never_read_do_not_stall_the_neighbour(lab):
    """Finding 1: 20 connections pipelining 16 KiB replies they never read (agent +360 MiB, victim 2 s before)."""
    rss = lab.svc.host_stats()["rss_kib"]
    latencies = await attacked(lab, "metadata-pipeline", 10, conns=20, path="/latest/user-data")
    stats = lab.svc.host_stats()
    print(f"\nvictim under pipelining: {latencies.summary()}; agent RSS {rss} -> {stats['rss_kib']} KiB; "
          f"metadata {stats['metadata'][lab.l3.uuid]}")
    assert latencies.failures == 0 and latencies.p99() < P99
    assert stats["rss_kib"] - rss < 50 * 1024
    assert stats["metadata"][lab.l3.uuid].get("throttled", 0) > 0  # the source's rate was what held it back


async def test_a_guest_holding_thousands_of_connections_only_recycles_its_own(lab):
    """Finding 1: 2,000 slow-reading connections against 1,024 descriptors (95 % of the victim unanswered before)."""
    latencies = await attacked(lab, "metadata-hold", 10, conns=2000)
    stats = lab.svc.host_stats()["metadata"][lab.l3.uuid]
    print(f"\nvictim while the attacker holds connections: {latencies.summary()}; metadata {stats}")
    assert latencies.failures == 0 and latencies.p99() < P99
    assert stats["evicted"] > 0 and stats.get("accept_errors", 0) == 0


async def test_out_of_descriptors_the_server_backs_off_sheds_and_keeps_serving(run):
    """Finding 1: with the connection caps out of the way, `accept()` hits EMFILE: no spin, no log flood."""
    lab = make_lab(run, "e", {"guest_pps": 0}, connections_per_source=100_000, max_connections=100_000)
    try:
        since = lab.svc.log_path.stat().st_size
        pid = lab.svc.proc.pid
        cpu = cpu_seconds([pid])
        t0 = time.monotonic()
        latencies = await attacked(lab, "metadata-hold", 12, conns=2000)
        busy = (cpu_seconds([pid]) - cpu) / (time.monotonic() - t0)
        stats = lab.svc.host_stats()["metadata"][lab.l3.uuid]
        lines = log_lines(lab.svc.log_path, "accept failed", since)
        print(f"\nvictim out of descriptors: {latencies.summary()}; service CPU {busy:.0%}; {lines} log lines; {stats}")
        assert latencies.failures <= len(latencies.samples) * 0.05  # a shed connection may cost the victim one try
        assert busy < 0.6 and lines < 20
        assert stats["accept_errors"] > 0 and stats["shed"] > 0
    finally:
        lab.close()


async def test_a_partial_follow_up_request_is_kept_after_a_remembered_one(lab):
    """Finding 6: a request kept in the reply memo, received together with the start of the next one."""
    first, second = (f"GET {p} HTTP/1.1\r\nHost: {METADATA_ADDRESS}\r\n\r\n".encode()
                     for p in (INSTANCE_ID, "/latest/meta-data/local-ipv4"))
    replies = []
    sock = netns_socket(lab.ns["victim"].ns.name, socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(2)
        sock.connect((METADATA_ADDRESS, 80))
        reader = sock.makefile("rb")
        for chunk in (first, first + second[:12], second[12:], first + second[:12], second[12:]):
            sock.sendall(chunk)
            time.sleep(0.15)  # each chunk is its own read on the server
        for _ in range(5):
            head = b"".join(iter(reader.readline, b"\r\n"))
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            replies.append((head.split()[1], reader.read(length)))
    vm = lab.vms["victim"]
    assert replies == [(b"200", vm.uuid.encode()), (b"200", vm.uuid.encode()), (b"200", vm.nics[0].ip.encode()),
                       (b"200", vm.uuid.encode()), (b"200", vm.nics[0].ip.encode())]


async def test_guest_triggered_log_lines_are_bounded(lab):
    """Finding 7: thousands of refused requests and DHCP notices from guests, a handful of log lines."""
    stranger = lab.plug("stranger", lab.add_vm("stranger", 50, plug=False).nics[0])
    del lab.vms["stranger"]  # on the bridge, but no VM of ours: every request is refused
    since = lab.svc.log_path.stat().st_size
    proc = stranger.ns.popen(attacks.argv("metadata-pipeline", seconds=4, conns=2, path=INSTANCE_ID),
                             log_name="attack-refused")
    attacker = lab.ns["attacker"]
    dhcp = attacker.ns.popen(attacks.argv("dhcp", count=5000, ifname=attacker.ifname, mac=attacker.nic.mac,
                                          ip=attacker.nic.ip), log_name="attack-notices")
    for p in (proc, dhcp):
        await asyncio.get_running_loop().run_in_executor(None, p.wait, 60)
    await asyncio.sleep(1.5)
    reply = await nshttp.request(stranger.ns.name, METADATA_ADDRESS, INSTANCE_ID)
    assert reply is not None and reply.status == 403
    refused = log_lines(lab.svc.log_path, "metadata request refused", since)
    notices = log_lines(lab.svc.log_path, "client sent|over the rate", since)
    stats = lab.svc.stats()[lab.l3.uuid]["dhcp"]
    print(f"\n{refused} refusal lines, {notices} DHCP lines; dhcp {stats}")
    assert 1 <= refused <= 10 and 1 <= notices <= 20
    assert lab.svc.host_stats()["metadata"][lab.l3.uuid]["refused"] > 1000


def test_the_service_process_keeps_its_descriptor_limit(lab):
    """The tests above ran against 1,024 descriptors, as the agent's old unit left it."""
    limits = Path(f"/proc/{lab.svc.proc.pid}/limits").read_text()
    assert re.search(r"Max open files\s+1024\s+1024", limits)
