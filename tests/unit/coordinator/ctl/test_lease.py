"""The node's lease (deployer.remote.node, coordinator/ctl/lease.py): one install, upgrade or restore of a control
node at a time, its file in a temporary directory, an install's steps run in this process."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from coordinator.ctl import install, layout, lease, restore
from coordinator.ctl import pki as node_pki
from coordinator.ctl.errors import Busy
from coordinator.ctl.settings import CtlSettings
from deployer.engine import Call, Connection, HostRun, Step
from deployer.model import Outcome
from deployer.remote import host, node
from tests.unit.coordinator.ctl.test_install import OPTIONS, PROXY, RELEASE, applied, probe

OTHER = {"id": "0ther", "what": "hs-ctl install", "host": "ctl2", "pid": 4242, "local": False, "start": None}


@pytest.fixture
def lock(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(layout, "LOCK", tmp_path / "deploy" / "controlnode.lock")
    monkeypatch.setattr(layout, "STAMP", tmp_path / "deploy" / "controlnode.json")
    return layout.LOCK


def _lease(lock: Path, holder: dict[str, Any], **how: Any) -> dict[str, Any]:
    return {"lock": str(lock), "holder": holder, "ttl": 600, "stamp": {}, "stamp_path": str(layout.STAMP), **how}


def _held(lock: Path) -> dict[str, Any] | None:
    return json.loads(lock.read_text()) if lock.exists() else None


def test_a_lease_names_its_holder_and_refuses_another_until_it_is_released(lock: Path):
    me = lease.holder("hs-ctl install", local=False)
    assert node.check_lease(_lease(lock, me, check=True)) is None
    assert not lock.parent.exists()  # the probe of a node without an install makes nothing
    node.take_lease(_lease(lock, me, first=True))
    held = _held(lock)
    assert held is not None and held["id"] == me["id"] and held["expires"] - held["since"] == 600
    with pytest.raises(host.Fail) as e:
        node.check_lease(_lease(lock, OTHER, check=True))
    assert str(e.value) == (
        f"hs-ctl install from {me['host']} (pid {os.getpid()}) since {node._when(held['since'])}, expires "
        f"{node._when(held['expires'])} holds this node ({lock}); nothing was changed: run this again once it ended")
    with pytest.raises(host.Fail, match="^hs-ctl install from .* holds this node"):
        node.take_lease(_lease(lock, OTHER, first=True))
    node.release_lease(_lease(lock, OTHER))  # not its own: left alone
    assert _held(lock) == held
    node.take_lease(_lease(lock, me))  # renewed by a later step of the holder, since kept
    assert _held(lock)["since"] == held["since"]  # type: ignore[index]
    node.release_lease(_lease(lock, me))
    assert not lock.exists()
    node.take_lease(_lease(lock, OTHER, first=True))
    assert _held(lock)["id"] == OTHER["id"]  # type: ignore[index]


def test_an_expired_lease_or_one_whose_process_on_the_node_is_gone_is_taken_over(lock: Path):
    me = lease.holder("hs-ctl install", local=False)
    lock.parent.mkdir()
    lock.write_text(json.dumps({**OTHER, "since": time.time() - 700, "expires": time.time() - 100}))
    assert node.check_lease(_lease(lock, me, check=True))["host"] == "ctl2"  # type: ignore[index]  # reported
    node.take_lease(_lease(lock, me, first=True))
    assert _held(lock)["id"] == me["id"]  # type: ignore[index]
    for pid, start in ((1 << 22) + 1, "1"), (os.getpid(), "-1"):  # a killed restore: its process gone, or its pid
        lock.write_text(json.dumps({**OTHER, "local": True, "pid": pid, "start": start, "since": 1, "expires": None}))
        node.take_lease(_lease(lock, me, first=True))  # another's now
        assert _held(lock)["id"] == me["id"]  # type: ignore[index]
    running = lease.holder("hs-ctl restore", local=True)  # this process: it runs
    lock.write_text(json.dumps({**running, "since": 1, "expires": None}))
    with pytest.raises(host.Fail, match=r"^hs-ctl restore from .* since 1970-01-01 00:00:01 UTC, until its process "
                                        "ends holds this node"):
        node.take_lease(_lease(lock, me, first=True))


def test_the_first_step_takes_a_free_lease_only_while_the_stamp_is_what_its_probe_read(lock: Path):
    """Another install ran from start to end between this one's probe and its first step: planned on what that
    one replaced, this one would undo it (new secrets, the printed admin token not the node's)."""
    me = lease.holder("hs-ctl install", local=False)
    host.stamp(str(layout.STAMP), "files", "theirs")
    with pytest.raises(host.Fail, match="^another install changed the node since this one probed it; nothing was "):
        node.take_lease(_lease(lock, me, first=True, stamp={}))
    assert not lock.exists()
    node.take_lease(_lease(lock, me, first=True, stamp={"files": "theirs"}))
    assert lock.exists()


def test_a_later_step_whose_lease_was_taken_over_fails_naming_the_holder(lock: Path):
    me = lease.holder("hs-ctl install", local=False)
    node.take_lease(_lease(lock, me, first=True))
    lock.write_text(json.dumps({**OTHER, "since": 1, "expires": time.time() + 600}))
    with pytest.raises(host.Fail, match=r"^this run's lease on the node \(.*\) lapsed: hs-ctl install from ctl2 "
                                        r"\(pid 4242\) since .* holds it; the steps before this one were done"):
        node.take_lease(_lease(lock, me))
    lock.unlink()  # nobody's: another took it and gave it back, so it may have changed the node
    with pytest.raises(host.Fail, match="lapsed; the steps before"):
        node.take_lease(_lease(lock, me))


def test_a_step_holds_the_lease_while_it_runs_renewing_it_and_the_last_or_a_failed_one_releases_it(lock: Path):
    me = lease.holder("hs-ctl install", local=False)
    seen: list[dict[str, Any] | None] = []

    def slow(a: dict[str, Any]) -> dict[str, Any]:
        seen.append(_held(lock))
        time.sleep(0.5)  # past the lease's life: renewed meanwhile
        seen.append(_held(lock))
        with pytest.raises(host.Fail, match="holds this node"):
            node.take_lease(_lease(lock, OTHER, first=True))
        return {"done": a["x"]}
    step = node.leased(slow)
    assert step({"x": 1, "lease": _lease(lock, me, first=True, ttl=0.2)}) == {"done": 1}
    assert seen[0]["id"] == me["id"] and seen[1]["expires"] > seen[0]["expires"]  # type: ignore[index]
    assert lock.exists()
    assert step({"x": 2, "lease": _lease(lock, me, release=True)}) == {"done": 2} and not lock.exists()
    node.take_lease(_lease(lock, me, first=True))

    def fails(a: dict[str, Any]) -> None:
        raise host.Fail("apt: package x not found")
    with pytest.raises(host.Fail):
        node.leased(fails)({"lease": _lease(lock, me)})
    assert not lock.exists()  # the install ended there


def test_a_restore_is_refused_while_an_install_holds_the_node_and_holds_it_itself_while_it_runs(
        lock: Path, tmp_path: Path, monkeypatch):
    """An install restarts etcd (or writes its configuration) under a restore's wait, a restore stops it under an
    install's."""
    member = restore.Member("n1", tmp_path / "data", "http://127.0.0.1:2380", "n1=http://127.0.0.1:2380", "t")
    monkeypatch.setattr(restore, "check", lambda s, path: ("0" * 64, {"revision": 9, "totalKey": 3}))
    monkeypatch.setattr(restore.Member, "load", lambda path: member)
    during: list[dict[str, Any] | None] = []

    def unpack(s: CtlSettings, path: Path, m: restore.Member, into: Path) -> None:
        during.append(_held(lock))
        with pytest.raises(host.Fail, match=r"^hs-ctl restore from .* until its process ends holds this node"):
            node.check_lease(_lease(lock, OTHER, check=True))
        raise host.Fail("stop here")
    monkeypatch.setattr(restore, "unpack", unpack)
    node.take_lease(_lease(lock, OTHER, first=True))
    with pytest.raises(Busy, match=r"^hs-ctl install from ctl2 \(pid 4242\) since .* holds this node"):
        restore.restore(CtlSettings(), Path("/b/x.db"))
    assert during == []
    node.release_lease(_lease(lock, OTHER))
    with pytest.raises(host.Fail, match="stop here"):
        restore.restore(CtlSettings(), Path("/b/x.db"))
    assert during[0]["what"] == "hs-ctl restore" and during[0]["pid"] == os.getpid()  # type: ignore[index]
    assert not lock.exists()


# An install's runs: each Call of the node's program (deployer.remote.node.FUNCTIONS: the lease around each) on
# canned answers, here.

TLS = dataclasses.replace(OPTIONS, pki=node_pki.node_pki(OPTIONS.address, {}))
UP_TO_DATE = applied(install.plan(TLS, RELEASE, probe(), PROXY))


@dataclasses.dataclass
class Node:
    answers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]
    ran: list[str] = dataclasses.field(default_factory=list)
    leases: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    interrupted: str | None = None  # the step the controller is interrupted at

    def run(self, hosts: Mapping[str, HostRun], steps: Sequence[Step], listener: Any) -> None:
        for name, h in hosts.items():
            for step in (s for s in steps if s.name in h.args):
                self.ran.append(step.name)
                if step.name == self.interrupted:  # Ctrl-C on the controller
                    raise KeyboardInterrupt
                if isinstance(step, Call):
                    args = dict(h.args[step.name])
                    self.leases[step.name] = args.get("lease", {})
                    try:
                        answer = self.answers.get(step.function, node.release_lease if step is install.RELEASE
                                                  else lambda a: {})
                        data = node.leased(answer)(args)
                    except host.Fail as e:
                        listener.finished(name, step.name, Outcome(ok=False, error=str(e)))
                        return
                    listener.finished(name, step.name, Outcome(ok=True, data=data))


def _install(n: Node, upgrade: bool = False) -> install.Installed:
    holder = lease.holder("hs-ctl upgrade" if upgrade else "hs-ctl install", local=False)
    run = install._NodeRun(n, Connection(address="198.18.0.2"), "198.18.0.2", holder)  # type: ignore[arg-type]
    return install._run(run, TLS, RELEASE, RELEASE.bundle, {"name": "pre-upgrade"} if upgrade else None, None)


def _probe(stamp: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A node whose stamp is `stamp` (in the stamp file too: the first step compares it with the probe's)."""
    def answer(a: dict[str, Any]) -> dict[str, Any]:
        host.write(layout.STAMP, json.dumps(stamp), 0o644)
        return {**probe(stamp), "secrets": dict(PROXY)}
    return answer


def test_an_unchanged_node_costs_its_probe_alone_and_no_lease_is_left(lock: Path):
    n = Node({"node_probe": _probe(UP_TO_DATE)})
    assert _install(n).changed == []
    assert n.ran == [install.PROBE.name] and n.leases[install.PROBE.name]["check"] and not lock.exists()


def test_a_second_install_while_the_first_holds_the_lease_fails_naming_it_and_runs_nothing(lock: Path):
    node.take_lease(_lease(lock, OTHER, first=True))
    n = Node({"node_probe": _probe({})})
    with pytest.raises(install.InstallFailed, match=r"^198\.18\.0\.2: probe: hs-ctl install from ctl2 \(pid 4242\) "
                                                    r"since .* holds this node .*nothing was changed"):
        _install(n)
    assert n.ran == [install.PROBE.name] and _held(lock)["id"] == OTHER["id"]  # type: ignore[index]


def test_the_first_step_that_changes_the_node_takes_the_lease_the_last_releases_it(lock: Path, caplog):
    held: list[str] = []

    def files(a: dict[str, Any]) -> dict[str, Any]:
        held.append(_held(lock)["what"])  # type: ignore[index]
        return {}
    lock.parent.mkdir()
    lock.write_text(json.dumps({**OTHER, "since": 1, "expires": time.time() - 1}))  # its holder died: expired
    n = Node({"node_probe": _probe({**UP_TO_DATE, "files": "old"}), "files": files})
    with caplog.at_level(logging.WARNING):
        assert _install(n).changed == [install.FILES.name]
    assert "taking over the node's lease of hs-ctl install from ctl2 (pid 4242)" in caplog.text
    assert held == ["hs-ctl install"] and not lock.exists()
    assert n.ran == [install.PROBE.name, install.FILES.name]
    assert (n.leases[install.FILES.name]["first"], n.leases[install.FILES.name]["release"]) == (True, True)


def test_an_upgrade_holds_the_lease_from_its_backup_and_gives_it_back_when_nothing_follows(lock: Path):
    n = Node({"node_probe": _probe(UP_TO_DATE), "backup": lambda a: {"report": f"backup by {_held(lock)['what']}"}})
    assert _install(n, upgrade=True).backup == "backup by hs-ctl upgrade"
    assert n.ran == [install.PROBE.name, install.BACKUP.name, install.RELEASE.name] and not lock.exists()


def test_a_failed_install_gives_the_lease_back_one_cut_short_by_ctrl_c_leaves_it_to_expire(lock: Path):
    """A step a Ctrl-C cut short on the controller may still run on the node, renewing the lease: not given back."""
    stale = {**UP_TO_DATE, "files": "old", "service etcd": "old"}

    def services(a: dict[str, Any]) -> dict[str, Any]:
        raise host.Fail("etcd did not answer")
    failing = Node({"node_probe": _probe(stale), "services": services})
    with pytest.raises(install.InstallFailed, match="^198.18.0.2: services: etcd did not answer$"):
        _install(failing)
    assert failing.ran == [install.PROBE.name, install.FILES.name, install.SERVICES.name, install.RELEASE.name]
    assert not lock.exists()
    n = Node({"node_probe": _probe(stale)}, interrupted=install.SERVICES.name)
    with pytest.raises(KeyboardInterrupt):
        _install(n)
    assert n.ran[-1] == install.SERVICES.name and _held(lock)["what"] == "hs-ctl install"  # type: ignore[index]


def test_a_renewing_step_and_a_release_do_not_race(lock: Path):
    """The renewing thread is stopped before the release: it must not write the lease again after it."""
    me = lease.holder("hs-ctl install", local=False)
    stop = threading.Event()
    step = node.leased(lambda a: {"ok": stop.wait(0.3)})
    for _ in range(3):
        assert step({"lease": _lease(lock, me, first=True, release=True, ttl=0.01)}) == {"ok": False}
        time.sleep(0.05)
        assert not lock.exists()
