"""The pipeline: bridges first, expected failures retried and counted, bugs end the actor's task."""

from __future__ import annotations

import asyncio

import pytest

from agentkit.journal import Journal
from agentkit.model import OBSERVED_ERROR_MAX, Held, VmSpec
from agentkit.proc import ProcessError
from agentkit.supervise import Supervisor
from kvmagent.agent import Reconciler, Reporter
from kvmagent.errors import BridgeError
from kvmagent.view import HostView


class Comp:
    def __init__(self, name: str, after: tuple[str, ...] = (), log: list | None = None):
        self.name, self.after = name, after
        self.log = log if log is not None else []
        self.fail: list[BaseException] = []  # raised by the next applies, in order
        self.gate = asyncio.Event()
        self.gate.set()
        self.closed = False

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        await self.gate.wait()
        self.log.append((self.name, view.rev, resync))
        if self.fail:
            raise self.fail.pop(0)

    async def close(self) -> None:
        self.closed = True


async def until(pred, timeout: float = 2.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


@pytest.fixture
async def sup():
    crashes: list[str] = []
    s = Supervisor(exit_delay=0.01, on_crash=lambda: crashes.append("crash"))
    s.crashes = crashes
    yield s
    await s.stop()


async def test_components_after_the_bridges_wait_for_their_pass_over_the_revision(sup):
    log: list = []
    bridges, vms, secrets = Comp("bridges", log=log), Comp("vms", ("bridges",), log), Comp("secrets", log=log)
    bridges.gate.clear()  # a slow bridge pass
    rec = Reconciler([vms, secrets, bridges])
    rec.start(sup)
    await rec.on_state({}, 7)
    await until(lambda: ("secrets", 7, False) in log)
    assert ("vms", 7, False) not in log  # waits for the bridges, not for the secrets
    bridges.gate.set()
    await until(lambda: ("vms", 7, False) in log)
    assert log.index(("bridges", 7, False)) < log.index(("vms", 7, False))
    assert rec.stats.applied_rev == 7


async def test_an_expected_failure_is_counted_and_retried_and_the_dependents_still_run(sup):
    log: list = []
    bridges, vms = Comp("bridges", log=log), Comp("vms", ("bridges",), log)
    bridges.fail = [BridgeError("eth9 not found"), ProcessError(["nft"], 1, "", "no")]
    rec = Reconciler([bridges, vms])
    rec.start(sup)
    await rec.on_state({}, 3)
    await until(lambda: log.count(("bridges", 3, False)) == 3)  # retried with backoff until it works
    assert ("vms", 3, False) in log  # the bridges' pass failed in part: the VMs report their own errors
    assert rec.stats.errors == {"bridges": 2} and not rec.stats.last_error
    assert sup.crashed is None


async def test_the_health_reported_says_which_components_fail_once_per_change(sup):
    bridges, eip = Comp("bridges"), Comp("eip", ("bridges",))
    eip.fail = [ProcessError(["nft"], 1, "", "no table"), ProcessError(["nft"], 1, "", "no table"),
                ProcessError(["nft"], 1, "", "x" * 5000)]
    told: list[dict[str, str]] = []
    rec = Reconciler([bridges, eip], health=told.append)
    rec.start(sup)
    await rec.on_state({}, 1)
    await until(lambda: len(told) == 4, timeout=10)  # the first pass (bridges ok), eip's error, its new error, ok
    assert told[0] == {}  # what the coordinator kept from before a restart is replaced at once
    assert told[1] == {"eip": "ProcessError: 'nft' exited 1: no table"}  # the same failure again: not retold
    assert told[2]["eip"].startswith("ProcessError: 'nft' exited 1: xxx") and len(told[2]["eip"]) == OBSERVED_ERROR_MAX
    assert told[3] == {}
    passes = rec.stats.reconciles
    rec.poke()
    await until(lambda: rec.stats.reconciles == passes + 2)
    assert len(told) == 4  # nothing changed: nothing told
    rec.retell_health()  # the link connected again: the coordinator's copy may be out of date
    assert told[4:] == [{}]


async def test_the_health_reported_names_the_desired_items_held_until_they_are_readable(sup):
    told: list[dict[str, str]] = []
    rec = Reconciler([Comp("vms")], health=told.append)
    rec.start(sup)
    await rec.on_state({"vm/a": Held.of(_invalid({"uuid": "a"})), "l2/b": Held("state: unknown")}, 1)
    await until(lambda: len(told) == 1)
    assert told[0] == {"desired": "desired items this agent cannot read, left as they are (a coordinator newer than "
                                  "this agent?): l2/b: state: unknown; vm/a: name: Field required"}
    await rec.on_state({"vm/a": VmSpec(uuid="a", name="a")}, 2)  # readable again (or deleted)
    await until(lambda: len(told) == 2)
    assert told[1] == {}


def _invalid(value: dict) -> ValueError:
    try:
        VmSpec.model_validate(value)
    except ValueError as e:
        return e
    raise AssertionError(f"{value} is valid")


async def test_health_is_not_retold_before_it_was_told():
    told: list[dict[str, str]] = []
    Reconciler([Comp("vms")], health=told.append).retell_health()  # no pass yet: nothing known to tell
    assert told == []


async def test_a_bug_in_a_component_ends_the_process(sup):
    vms = Comp("vms")
    vms.fail = [KeyError("bug")]
    rec = Reconciler([vms])
    rec.start(sup)
    await rec.on_state({}, 1)
    await until(lambda: sup.crashes == ["crash"])
    assert isinstance(sup.crashed, KeyError) and not rec.stats.errors


async def test_the_periodic_resync_is_a_full_pass(sup):
    log: list = []
    rec = Reconciler([Comp("vms", log=log)], resync_interval=0.05)
    rec.start(sup)
    await rec.on_state({}, 2)
    await until(lambda: ("vms", 2, True) in log)
    assert log[0] == ("vms", 2, False)


async def test_close_closes_every_component_and_unknown_dependencies_are_refused():
    comps = [Comp("a"), Comp("b", ("a",))]
    await Reconciler(comps).close()
    assert all(c.closed for c in comps)
    with pytest.raises(ValueError, match="unknown"):
        Reconciler([Comp("vms", ("bridges",))])


async def test_reports_are_journaled(tmp_path):
    journal = Journal(tmp_path)
    Reporter(journal)("vm", "v1", {"state": "Running"})
    await journal.flush()
    assert [(e.kind, e.id, e.body) for e in journal.pending] == [("vm", "v1", {"state": "Running"})]


async def test_while_a_component_that_fails_closed_fails_those_after_it_wait(sup):
    """Anti-spoofing failing (say nft refusing the table after a reboot) holds back the VMs and the flat
    services until a pass of it at their revision or later succeeded; a failed pass of the bridges does not."""
    log: list = []
    bridges, antispoof = Comp("bridges", log=log), Comp("antispoof", ("bridges",), log)
    antispoof.fails_closed = True
    vms, flatnet = Comp("vms", ("bridges", "antispoof"), log), Comp("flatnet", ("bridges", "antispoof"), log)
    bridges.fail = [BridgeError("eth9 not found")]
    antispoof.fail = [ProcessError(["nft", "-f", "-"], 1, "", "Error: Could not process rule")]
    rec = Reconciler([bridges, antispoof, vms, flatnet])
    rec.start(sup)
    await rec.on_state({}, 5)
    await until(lambda: ("antispoof", 5, False) in log)
    await asyncio.sleep(0.2)  # its retry is 0.5 s away
    assert [e[0] for e in log] == ["bridges", "antispoof"]  # nothing runs unfiltered
    await until(lambda: ("vms", 5, False) in log and ("flatnet", 5, False) in log)
    assert log.count(("antispoof", 5, False)) == 2 and rec.stats.applied["antispoof"] == 5
