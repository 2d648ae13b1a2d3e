"""The dataplane adapters: bridges first, EIP failures are expected ones, the test-only fault is a bug."""

from __future__ import annotations

import asyncio

import pytest

from agentkit.model import L2Spec, LiveMigration, NicSpec, VmSpec
from agentkit.proc import ProcessError
from agentkit.supervise import Supervisor
from flatnet.errors import NamespaceError
from kvmagent.agent import Reconciler
from kvmagent.components import (
    AntispoofComponent,
    EipComponent,
    FlatnetComponent,
    PreparedComponent,
    VmsComponent,
)
from kvmagent.errors import DataplaneError, NotListed
from kvmagent.view import HostView

VM = VmSpec(uuid="aaaaaaaa-0000-4000-8000-000000000001", name="boom",
            nics=[NicSpec(uuid="nic0000aaaa", l3_uuid="l3", mac="52:54:00:00:00:01", ip="198.18.0.10", default=True)])
VIEW = HostView(rev=1, vms={VM.uuid: VM})


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def apply(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self

    errors = {"hseabc": "veth did not appear"}


async def test_the_injected_fault_is_a_bug_not_an_expected_failure():
    vms = Recorder()
    with pytest.raises(RuntimeError, match="fault injected"):
        await VmsComponent(vms, fault="boom").apply(VIEW)
    await VmsComponent(vms, fault="other").apply(VIEW, resync=True)
    assert vms.calls == [((VIEW.vms, VIEW.l2s, VIEW.l3s, VIEW.configs), {"full": True, "held": set()})]


async def test_eips_not_applied_are_an_expected_failure():
    with pytest.raises(DataplaneError, match="veth did not appear"):
        await EipComponent(Recorder()).apply(VIEW)


class Dataplane:
    """An EIP dataplane that records what it was given: (call, VM uuids, kwargs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, set[str], dict]] = []
        self.errors: dict[str, str] = {}

    async def apply(self, l2s, l3s, vms, **kwargs):
        self.calls.append(("apply", set(vms), kwargs))
        return self

    async def silence(self, l2s, l3s, vms):
        self.calls.append(("silence", set(vms), {}))


async def test_eips_of_a_vm_moving_here_are_given_to_the_dataplane_and_tables_read_back_now_and_then():
    """An `incoming` VM's EIPs are the plan's to stage (flatnet.eip.plan), not filtered out here. Tables are
    read back on the first pass, the periodic one, and once `verify_every` has passed since the last."""
    incoming = VM.model_copy(update={"uuid": "bbbbbbbb-0000-4000-8000-000000000002", "incoming": "move0001"})
    dataplane = Dataplane()
    comp = EipComponent(dataplane, verify_every=3600)
    await comp.apply(HostView(rev=1, vms={VM.uuid: VM, incoming.uuid: incoming}))
    await comp.apply(VIEW)
    await comp.apply(VIEW, resync=True)
    comp.verify_every = 0  # as if that long had passed
    await comp.apply(VIEW)
    assert dataplane.calls == [("apply", {VM.uuid, incoming.uuid}, {"verify": True}),
                               ("apply", {VM.uuid}, {"verify": False}), ("apply", {VM.uuid}, {"verify": True}),
                               ("apply", {VM.uuid}, {"verify": True})]


async def test_a_vm_gone_for_another_host_is_silenced_at_once_and_tidied_by_the_next_pass():
    leaving = VM.model_copy(update={"migrate_to": LiveMigration(id="move0001", host="hostb", uri="qemu+tls://b/system",
                                                                address="198.18.0.2")})
    stays = VM.model_copy(update={"uuid": "cccccccc-0000-4000-8000-000000000003"})
    view = HostView(rev=2, vms={leaving.uuid: leaving, stays.uuid: stays})
    dataplane, woken = Dataplane(), []
    comp = EipComponent(dataplane)
    comp.wake = lambda: woken.append(True)
    withdrawn = asyncio.create_task(comp.withdraw(leaving.uuid))
    await asyncio.sleep(0)
    assert not withdrawn.done() and dataplane.calls == []  # no view yet: it waits for the first
    await comp.apply(view)
    await withdrawn
    assert dataplane.calls[0] == ("apply", {leaving.uuid, stays.uuid}, {"verify": True})
    assert dataplane.calls[1] == ("silence", {stays.uuid}, {}) and woken == [True]
    await comp.apply(view)  # the pass it asked for
    assert dataplane.calls[2] == ("apply", {stays.uuid}, {"verify": False})
    await comp.restore(leaving.uuid)  # its move failed: it runs here again
    assert dataplane.calls[3] == ("apply", {leaving.uuid, stays.uuid}, {"verify": False})


class Domains:
    def __init__(self, taps: dict[str, tuple[str, ...]] | None) -> None:
        self.taps = taps

    def domain_taps(self) -> dict[str, tuple[str, ...]]:
        if self.taps is None:
            raise NotListed("not yet")
        return self.taps


async def test_antispoof_gets_every_tap_with_its_mac_and_ip():
    """Whether the table needs writing is the nft writer's fingerprint check (flatnet.nft), not a cache here."""
    rules = Recorder()
    comp = AntispoofComponent(rules, Domains({VM.uuid: (VM.nics[0].tap,)}))
    await comp.apply(VIEW)
    assert rules.calls == [(({VM.nics[0].tap: ("52:54:00:00:00:01", "198.18.0.10")},), {"gone": set(), "ports": set()})]
    assert all(c.after == ("bridges",) for c in (comp, VmsComponent(rules), EipComponent(rules)))


async def test_taps_of_domains_no_longer_wanted_stay_filtered_and_uplinks_are_ours():
    """The union of desired NICs and NICs of domains that still exist; nothing before the first listing."""
    rules = Recorder()
    l2 = L2Spec(uuid="l2000000aaaa", name="l2", physical_interface="eth1", vlan=7)
    view = HostView(rev=2, l2s={l2.uuid: l2}, vms={VM.uuid: VM})
    await AntispoofComponent(rules, Domains({VM.uuid: (VM.nics[0].tap,), "deleted": ("hstdead0001",)})).apply(view)
    assert rules.calls[0][1] == {"gone": {"hstdead0001"}, "ports": {l2.uplink}}
    with pytest.raises(NotListed):
        await AntispoofComponent(rules, Domains(None)).apply(view)
    assert len(rules.calls) == 1


class DegradedDataplane(Dataplane):
    """Another VM's EIP pair fails at every apply; `silence` meets a netlink error once."""

    def __init__(self) -> None:
        super().__init__()
        self.errors = {"hse0a1b2c3e": "veth did not appear"}
        self.silence_fails = True

    async def silence(self, l2s, l3s, vms):
        await super().silence(l2s, l3s, vms)
        if self.silence_fails:
            self.silence_fails = False
            raise NamespaceError(netns="hse0a1b2c3d", reason="netlink: No buffer space available")


async def test_a_vm_back_from_a_failed_move_gets_its_eips_again_whatever_other_pairs_fail():
    """Another pair's failure is the pipeline's to report and retry (asked for a pass), not the hand-over's:
    the VM's EIPs are applied and nothing is raised. A silence that failed is raised to be tried again, and the
    pass that takes the VIPs away is asked for all the same."""
    leaving = VM.model_copy(update={"migrate_to": LiveMigration(id="move0001", host="hostb", uri="qemu+tls://b/system",
                                                                address="198.18.0.2")})
    view = HostView(rev=2, vms={leaving.uuid: leaving})
    dataplane, woken = DegradedDataplane(), []
    comp = EipComponent(dataplane)
    comp.wake = lambda: woken.append(True)
    with pytest.raises(DataplaneError):
        await comp.apply(view)
    with pytest.raises(NamespaceError):
        await comp.withdraw(leaving.uuid)
    assert woken == [True] and comp.away == {leaving.uuid}
    await comp.withdraw(leaving.uuid)  # tried again: silenced
    assert dataplane.calls[-1] == ("silence", set(), {}) and woken == [True, True]
    await comp.restore(leaving.uuid)  # its move failed: it runs here again
    assert dataplane.calls[-1] == ("apply", {leaving.uuid}, {"verify": False}) and woken == [True] * 3


async def test_the_vms_and_flat_services_wait_for_a_successful_antispoof_pass():
    """VM A (IP X) deleted and VM B made with X on this host: the metadata server maps X to B only once A can no
    longer send as X, so flat services, like the VMs, wait for anti-spoofing to succeed at that revision."""
    log: list[str] = []

    class Flat(Recorder):
        async def apply(self, *args, **kwargs):
            log.append("flatnet")

    class Filter(Recorder):
        failures = 1

        async def apply(self, *args, **kwargs):
            log.append("antispoof")
            if self.failures:
                self.failures -= 1
                raise ProcessError(["nft", "-f", "-"], 1, "", "Error: Could not process rule")

    class Bridges:
        name, after = "bridges", ()

        async def apply(self, view, *, resync=False):
            return None

    rec = Reconciler([Bridges(), AntispoofComponent(Filter(), Domains({})), FlatnetComponent(Flat())])
    tasks = Supervisor()
    rec.start(tasks)
    await rec.on_state({}, 1)
    for _ in range(300):
        await asyncio.sleep(0.01)
        if "flatnet" in log:
            break
    await tasks.stop()
    assert log == ["antispoof", "antispoof", "flatnet"]


async def test_a_vm_moving_here_is_reported_prepared_once_the_components_before_it_applied_its_view():
    """The source sends the VM only on this report: a staging pass that failed holds it back until one succeeds;
    a later view with the same move says nothing again (but the periodic pass does), a new move is reported."""
    log: list[str] = []
    incoming = VM.model_copy(update={"incoming": "move0001"})

    class Eips:
        name, after, failures = "eip", ("bridges",), 1

        async def apply(self, view, *, resync=False):
            log.append("eip")
            if self.failures:
                self.failures -= 1
                raise DataplaneError("EIPs not applied: {'hseabc': 'veth did not appear'}")

    class Bridges:
        name, after = "bridges", ()

        async def apply(self, view, *, resync=False):
            log.append("bridges")

    prepared = PreparedComponent(("bridges", "eip"), lambda name: rec.stats.applied.get(name, -1),
                                 lambda kind, ident, body: log.append(f"{kind} {ident} {body['prepared']}"))
    rec = Reconciler([Bridges(), Eips(), prepared])
    tasks = Supervisor()
    rec.start(tasks)

    async def told(state: dict[str, object], rev: int, reports: int) -> None:
        await rec.on_state(state, rev)
        for _ in range(300):
            await asyncio.sleep(0.01)
            if sum(line.startswith("vm ") for line in log) == reports and rec.stats.applied.get("prepared") == rev:
                return
    await told({f"vm/{VM.uuid}": incoming}, 1, 1)
    assert log == ["bridges", "eip", "eip", f"vm {VM.uuid} move0001"]
    await told({f"vm/{VM.uuid}": incoming, "config/x": "y"}, 2, 1)
    await told({f"vm/{VM.uuid}": incoming.model_copy(update={"incoming": "move0002"})}, 3, 2)
    await tasks.stop()
    assert [line for line in log if line.startswith("vm ")] == [f"vm {VM.uuid} move0001", f"vm {VM.uuid} move0002"]
    await prepared.apply(rec.view, resync=True)  # the periodic pass says it again: a lost report is made good
    assert log[-2:] == [f"vm {VM.uuid} move0002"] * 2
