"""A guest flooding its host's DNS server over UDP and TCP; the neighbour's questions are answered (issue 13: 5).

Before: 500 idle TCP connections took the L3's one shared cap of 512 forwarding tasks, and the
neighbour's forwarded questions went unanswered. Now TCP connections are capped per source, and each
source has its own share of the forwards in flight. And an L3 without a gateway (isolated) gets no
forwarding at all: DNS must not be its way out.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from dnslib import RCODE

from testbed import attacks
from testbed.guestlab import GuestLab
from testbed.netns import Run

pytestmark = pytest.mark.real
FORWARDED = "www.example.net"


def make_lab(run: Run, role: str, gateway: bool = True) -> GuestLab:
    lab = GuestLab.create(run, role, gateway=gateway)
    lab.add_vm("victim", 10)
    lab.add_vm("attacker", 11)
    lab.start()
    return lab


@pytest.fixture(scope="module")
def lab(run):
    lab = make_lab(run, "n")
    yield lab
    lab.close()


def ask(lab: GuestLab, name: str, tcp: bool) -> list[str] | None:
    try:
        reply = lab.ns["victim"].dns(lab.l3.dhcp_address, name, tcp=tcp)
    except (OSError, ConnectionError):
        return None
    return [str(r.rdata) for r in reply.rr]


async def test_tcp_and_udp_floods_leave_the_neighbour_its_share(lab):
    attacker = lab.ns["attacker"].ns
    floods = [attacker.popen(attacks.argv("dns-tcp", host=lab.l3.dhcp_address, conns=500, seconds=12),
                             log_name="attack-dns-tcp"),
              attacker.popen(attacks.argv("dns-udp", host=lab.l3.dhcp_address, seconds=12), log_name="attack-dns-udp")]
    await asyncio.sleep(3)  # the connections are open, the forwards in flight
    loop = asyncio.get_running_loop()
    answers = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        for name, tcp in ((FORWARDED, False), (FORWARDED, True), ("attacker-vm.cloud.test", False)):
            answers.append(await loop.run_in_executor(None, ask, lab, name, tcp))
        await asyncio.sleep(0.1)
    for flood in floods:
        await loop.run_in_executor(None, flood.wait, 30)
    stats = lab.svc.stats()[lab.l3.uuid]["dns"]
    flood = json.loads(lab.run.path("attack-dns-tcp.log").read_text().splitlines()[-1])  # its own count
    print(f"\n{len(answers)} questions of the victim, {answers.count(None)} unanswered; dns {stats}; "
          f"tcp held {lab.svc.host_stats()['dns_tcp_connections']}; the TCP flood {flood}")
    assert answers.count(None) == 0
    assert all(a == ["203.0.113.7"] for a in answers[0::3] + answers[1::3])
    assert all(a == [lab.vms["attacker"].nics[0].ip] for a in answers[2::3])
    # the attacker's connections made room for each other, when it got many more than its cap (alone on this
    # machine ~260 of its 500 connect tries a second get through; once in a full suite so few did that its
    # first ones were still open: nothing to evict, the check would say nothing of the product)
    assert flood.get("connections", 0) < 100 or stats["tcp_evicted"] > 20, (flood, stats)
    assert stats["forward_limited"] > 0  # its forwards beyond its share were dropped


async def test_an_isolated_l3_gets_no_forwarding(run):
    lab = make_lab(run, "i", gateway=False)
    try:
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(None, lambda: lab.ns["victim"].dns(lab.l3.dhcp_address, FORWARDED))
        local = await loop.run_in_executor(None, ask, lab, "attacker-vm.cloud.test", True)
        stats = lab.svc.stats()[lab.l3.uuid]["dns"]
        assert reply.header.rcode == RCODE.REFUSED and reply.rr == []
        assert local == [lab.vms["attacker"].nics[0].ip]
        assert stats["not_forwarded"] == 1 and stats.get("forwarded", 0) == 0
    finally:
        lab.close()
