"""Lease changes coalesced per NIC and debounced before the journal (pure, with the event loop's timers)."""

from __future__ import annotations

import asyncio

from flatnet.dhcp.leasereports import LeaseReports


def body(state: str, ip: str = "10.0.0.5") -> dict[str, object]:
    return {"state": state, "ip": ip}


async def test_a_flapping_nic_costs_one_report_per_window_and_the_window_widens():
    sent: list[tuple[str, object]] = []
    reports = LeaseReports(lambda nic, b: sent.append((nic, b["state"])), debounce=0.05, debounce_max=0.2)
    for i in range(1000):
        reports.note("nic-a", body("released" if i % 2 else "declined"))
    reports.note("nic-b", body("bound"))
    await asyncio.sleep(0.08)
    assert sorted(sent) == [("nic-a", "released"), ("nic-b", "bound")]  # the latest state, once per NIC
    loop = asyncio.get_running_loop()
    began = loop.time()
    for i in range(20):  # nic-a keeps flapping
        reports.note("nic-a", body("declined" if i % 2 else "bound"))
        await asyncio.sleep(0.02)
    flapped = loop.time() - began  # 0.4 s; longer on a loaded machine, whose sleeps last longer
    assert 2 <= len([s for s in sent if s[0] == "nic-a"]) <= 3 + flapped / 0.2  # windows 0.1, 0.2, 0.2 s, ...
    reports.note("nic-b", body("bound"))  # unchanged: never reported again
    reports.note("nic-b", body("bound", ip="10.0.0.6"))  # another address: reported
    reports.close()
    assert sent[-1] == ("nic-b", "bound") and reports.stats["reported"] == len(sent)


async def test_nics_no_longer_served_are_flushed_and_forgotten():
    sent: list[str] = []
    reports = LeaseReports(lambda nic, b: sent.append(nic), debounce=10)
    reports.note("gone", body("released"))
    reports.note("kept", body("bound"))
    reports.retain(["kept"])
    assert sent == ["gone"]
    reports.close()
    assert sent == ["gone", "kept"]
