"""deployer.deploy's own logic: request checks, the host token, the deploy lock, the wait, the per-host results."""

from __future__ import annotations

import os
import re
import signal
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentkit import sshkeys
from agentkit.errors import Invalid
from deployer import kvmagent, tasks
from deployer.coordinator_api import Api, DeployLocks, coordinator_check
from deployer.deploy import (
    LOCK_LOST,
    DeploySettings,
    _Configs,
    _holding,
    _late_words,
    _lock,
    _Progress,
    _roll_back,
    _service_words,
    _summary,
    _Tls,
    _token,
    _wait,
    deploy,
)
from deployer.deploylog import DeployLog
from deployer.engine import Connection, Engine, HostRun, SshOptions
from deployer.errors import CoordinatorError, InvalidRequest
from deployer.model import AgentApiTokens, Outcome, Target
from deployer.sessions import Stale
from deployer.wheelhouse import Bundle
from testbed.deploylab import StubCoordinator

T1 = Target(name="kvm1", address="198.18.0.2", host_uuid="u1", host_token=None)
T2 = Target(name="kvm2", address="198.18.0.3", host_uuid="u2", host_token=None)


@pytest.fixture
def stub():
    s = StubCoordinator("adm").start()
    yield s
    s.stop()


@pytest.mark.parametrize("agent, targets, message, field", [
    ("nosuchagent", [T1], "unknown agent 'nosuchagent'; known: kvmagent, cephagent, consoleproxy, imagestore", "agent"),
    ("kvmagent", [T1, T1], "target names must be unique", "targets"),
])
def test_a_bad_request_is_refused_before_anything_happens(agent, targets, message, field):
    with pytest.raises(InvalidRequest) as e:
        deploy(agent, targets, "http://c", settings=DeploySettings(source_dir="/nonexistent"))
    assert (str(e.value), e.value.field) == (message, field)
    assert isinstance(e.value, Invalid) and isinstance(e.value, ValueError)  # callers catch either
    assert e.value.body() == {"error": {"code": "invalid", "message": message, "field": field}}


def test_no_targets_is_nothing_to_do():
    assert deploy("kvmagent", [], "http://c", settings=DeploySettings(source_dir="/nonexistent")) == {}


def test_a_target_without_token_gets_the_coordinators_answer_or_fails_naming_it():
    progress = _Progress([T1], None, "/var/tmp/x")
    asked = []

    def tokens(target: Target, found: str | None) -> str:
        asked.append(found)
        if found == "down":
            raise CoordinatorError("coordinator: connection refused")
        return found or "new"

    assert _token(T1, {"token": "kept", "config_token": "kept"}, tokens, progress) == "kept"
    assert _token(T1, {}, tokens, progress) == "new"
    given = Target(name="kvm1", address="198.18.0.2", host_uuid="u1", host_token="given")
    assert _token(given, {"token": "other"}, tokens, progress) == "given" and asked == ["kept", None]
    assert _token(T1, {"token": "down", "config_token": "down"}, tokens, progress) is None
    r = progress.results["kvm1"]
    assert (r.ok, r.task, r.message) == (False, "host token", "kvm1: host token: coordinator: connection refused")


def test_while_the_coordinator_keeps_a_renewed_token_the_config_keeps_its_own():
    """The agent renewed its token (the config still holds the one it replaced): the coordinator is asked about
    the renewed one, and while it keeps it the config is written as it is, so a redeploy changes nothing."""
    progress = _Progress([T1], None, "/var/tmp/x")
    asked = []

    def tokens(target: Target, found: str | None) -> str:
        asked.append(found)
        return found if found == "renewed" else "new"

    probe = {"token": "renewed", "config_token": "configured"}
    assert _token(T1, probe, tokens, progress) == "configured" and asked == ["renewed"]
    assert _token(T1, {"token": "expired", "config_token": "expired"}, tokens, progress) == "new"


def test_a_kvmagents_config_has_its_own_api_tokens_and_a_host_without_an_answer_fails_naming_it(tmp_path):
    progress = _Progress([T1, T2], None, "/var/tmp/x")

    def api_tokens(target: Target) -> AgentApiTokens:
        if target is T2:
            raise CoordinatorError("coordinator: HTTP 409: a stored credential cannot be decrypted")
        return AgentApiTokens("a" * 43, "m" * 20)
    tls = _Tls(kvmagent.SPEC, "http://c", tmp_path / "ca.pem", Api("http://c", "adm"))
    configs = _Configs(kvmagent.SPEC, Bundle(tmp_path / "w.tar", "d" * 64, "1.0"), "http://c", False, tls,
                       lambda t, found: "t" * 16, api_tokens, progress)
    want = configs.desired(T1, {"stamp": {}})
    assert want is not None and tomllib.loads(want.config)["api_token"] == "a" * 43
    assert tomllib.loads(want.config)["metrics_token"] == "m" * 20 and "t" * 16 not in ("a" * 43, "m" * 20)
    assert configs.desired(T2, {"stamp": {}}) is None
    r = progress.results["kvm2"]
    assert (r.ok, r.task, r.message) == (False, "agent API token", "kvm2: agent API token: coordinator: HTTP 409: "
                                         "a stored credential cannot be decrypted")


def test_progress_logs_before_and_after_every_task_and_names_the_failed_one(stub):
    dlog = DeployLog(stub.api_url, "adm")
    progress = _Progress([T1, T2], dlog, "/var/tmp/w.tar")
    for step, outcome in [("probe", Outcome(True, {"stamp": {}, "missing": [], "running": False})),
                          ("upload", Outcome(False, error="write: No space left on device"))]:
        progress.started("kvm1", step)
        progress.finished("kvm1", step, outcome)
    dlog.close()
    results = progress.finish("1.0")
    assert [(e["uuid"], e["host"], e["task"], e["phase"], e["ok"]) for e in stub.entries] == [
        ("u1", "kvm1", "probe", "before", None), ("u1", "kvm1", "probe", "after", True),
        ("u1", "kvm1", "upload", "before", None), ("u1", "kvm1", "upload", "after", False)]
    assert stub.entries[0]["message"] == tasks.DESCRIPTIONS["probe"]
    assert stub.entries[3]["message"] == "disk full: /var/tmp" and stub.entries[3]["duration_ms"] >= 0
    kvm1, kvm2 = results["kvm1"], results["kvm2"]
    assert (kvm1.ok, kvm1.task, kvm1.tasks, kvm1.message) == (
        False, "upload", ["probe", "upload"], "kvm1: upload: disk full: /var/tmp")
    assert progress.ran("kvm1", "probe") and not progress.ran("kvm1", "upload")
    assert (kvm2.ok, kvm2.task, kvm2.message) == (False, "probe", "kvm2: probe: no result")  # ansible said nothing


def test_what_a_host_says_reaches_terminals_and_the_log_escaped_and_bounded(stub):
    """A hostile host's answers carry terminal control sequences (retitle the window, clear the screen, move the
    cursor over what the operator reads) and any length; `hs deploy` and `hs host deploy-log` print messages as
    they are, and the coordinator refuses a log entry over 4000 characters."""
    dlog = DeployLog(stub.api_url, "adm")
    progress = _Progress([T1], dlog, "/var/tmp/w.tar")
    full = "Failed to replace '/var/tmp/" + "d/" * 3000 + "w.tar': [Errno 28] No space left on device"
    for step, outcome in [("install", Outcome(True, {"venv": "/opt/\x1b]0;owned\x07venv\r"})),
                          ("config", Outcome(False, error=full))]:
        progress.started("kvm1", step)
        progress.finished("kvm1", step, outcome)
    dlog.close()
    assert stub.entries[1]["message"] == "installed into /opt/\\x1b]0;owned\\x07venv\\r"
    failed = progress.finish("1.0")["kvm1"].message
    assert failed.startswith("kvm1: config: disk full: /var/tmp/d/d/") and failed.endswith("d...")
    assert len(stub.entries[3]["message"]) == 1000 and failed == f"kvm1: config: {stub.entries[3]['message']}"


def test_a_host_that_only_probed_is_unchanged_and_one_that_ran_steps_is_deployed():
    progress = _Progress([T1, T2], None, "/var/tmp/w.tar")
    for host, steps in (("kvm1", ["probe"]), ("kvm2", ["probe", "config", "service", tasks.WAIT])):
        for step in steps:
            progress.started(host, step)
            progress.finished(host, step, Outcome(True, {"stamp": {}, "missing": [], "running": True}))
    results = progress.finish("2.0")
    assert [(r.ok, r.changed, r.message) for r in results.values()] == [
        (True, False, "kvm1: unchanged"), (True, True, "kvm2: deployed 2.0")]
    assert results["kvm2"].seconds >= 0


@pytest.mark.parametrize("step, data, summary", [
    ("probe", {"stamp": {"wheels": "w", "config": "c"}, "missing": ["nftables"], "running": True},
     "stamp ['config', 'wheels'], missing packages: nftables, agent running"),
    ("probe", {"stamp": {}, "missing": [], "running": False},
     "stamp absent, missing packages: none, agent not running"),
    ("packages", {"installed": ["a", "b"]}, "installed a b"),
    ("install", {"venv": "/opt/hoststack/kvmagent/venv-1"}, "installed into /opt/hoststack/kvmagent/venv-1"),
    ("service", {"pid": 42}, "started, supervisor pid 42"),
    ("service", {"pid": None}, "restarted by systemd"),
    ("wait connected", {}, "Connected"),
    ("config", {}, "ok"),
])
def test_each_step_says_what_it_did(step, data, summary):
    assert _summary(step, data) == summary


def test_a_host_locked_by_another_deploy_fails_naming_the_lock_and_the_others_go_on(stub):
    stub.locks["u1"] = "someone else's"
    locks = DeployLocks(stub.api_url, "adm", "tester", wait=0)
    progress = _Progress([T1, T2], None, "/var/tmp/w.tar")
    try:
        assert _lock([T1, T2], locks, progress) == [T2]
        assert stub.locks == {"u1": "someone else's", "u2": "lock-u2"}
    finally:
        locks.release()
    assert stub.locks == {"u1": "someone else's"}
    r = progress.results["kvm1"]
    assert (r.task, r.message) == ("deploy lock", "kvm1: deploy lock: coordinator: HTTP 409: host u1 is being deployed")


def test_a_host_at_the_address_of_another_of_the_deploy_fails_at_once_and_the_others_go_on(stub):
    """Two hosts of a kind at one address, added before the coordinator refused that: the lock is its address's
    too, held by this very deploy, which waited for itself until `lock_wait` (15 minutes) was over."""
    twin = Target(name="kvm1-again", address="198.18.0.2", host_uuid="u3", host_token=None)
    locks = DeployLocks(stub.api_url, "adm", "tester", wait=30)
    progress = _Progress([T1, twin, T2], None, "/var/tmp/w.tar")
    try:
        assert _lock([T1, twin, T2], locks, progress) == [T1, T2]
        assert stub.locks == {"u1": "lock-u1", "u2": "lock-u2"}
    finally:
        locks.release()
    r = progress.results["kvm1-again"]
    assert (r.ok, r.task, r.message) == (False, "deploy lock", "kvm1-again: deploy lock: host kvm1 of this deploy is "
                                         "at its address, 198.18.0.2: one machine is deployed once")


def test_a_host_whose_lock_was_lost_after_its_probe_fails_and_nothing_more_is_asked_for_it():
    progress = _Progress([T1, T2], None, "/var/tmp/x")
    engine = Engine("", SshOptions(control_path_dir="/cp", known_hosts="/kh"))
    for t in (T1, T2):
        progress.started(t.name, "probe")
        progress.finished(t.name, "probe", Outcome(ok=True, data={"missing": [], "running": True, "stamp": {}}))
    engine.stop("kvm2", LOCK_LOST)
    assert _holding([T1, T2], engine, progress) == [T1]
    r = progress.results["kvm2"]
    assert (r.ok, r.task, r.message) == (False, "deploy lock", f"kvm2: deploy lock: {LOCK_LOST}")
    assert progress.results["kvm1"].ok


@pytest.fixture
def interrupt_in() -> Iterator[Callable[[float], threading.Timer]]:
    """Ctrl-C of `hs deploy` in `seconds`: SIGINT, which interrupts the main thread's wait (where the deploy runs).
    Python's own handler is put in place for the test: a suite started in the background inherits SIGINT
    ignored, and Python then keeps ignoring it (the deploy would wait out its timeouts, as if not interrupted)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)

    def later(seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        return timer
    yield later
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_while_a_host_waits_for_its_lock_ends_the_wait_at_once(stub, interrupt_in):
    """Before, the interrupted deploy went on waiting for the lock until `lock_wait` (15 minutes) was over."""
    stub.locks["u1"] = "the coordinator's automatic deploy"
    locks = DeployLocks(stub.api_url, "adm", "tester", wait=30, poll=0.1)
    progress = _Progress([T1], None, "/var/tmp/w.tar")
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        interrupt_in(0.3)
        _lock([T1], locks, progress)
    locks.release()
    assert time.monotonic() - t0 < 10 and stub.locks == {"u1": "the coordinator's automatic deploy"}
    assert progress.results["kvm1"].message == "kvm1: deploy lock: the deploy was interrupted"


def test_ctrl_c_while_waiting_for_agents_to_connect_ends_the_wait_at_once(interrupt_in):
    """Before, it waited on until `connected_timeout` was over."""
    progress = _Progress([T1, T2], None, "/var/tmp/w.tar")
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        interrupt_in(0.3)
        _wait([T1, T2], lambda target, version: False, "1.0", 30, progress, lambda late: pytest.fail("asked"))
    assert time.monotonic() - t0 < 10
    assert progress.results["kvm1"].message == "kvm1: wait connected: the deploy was interrupted"


def test_wait_polls_until_connected_through_coordinator_failures():
    answers = iter([CoordinatorError("coordinator: restarting"), False, True])

    def check(target: Target, version: str) -> bool:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    progress = _Progress([T1], None, "/var/tmp/w.tar")
    _wait([T1], check, "1.0", 10, progress, lambda late: pytest.fail("asked"))
    assert progress.results["kvm1"].tasks == ["wait connected"] and progress.results["kvm1"].ok


def test_wait_gives_up_after_the_timeout_with_the_last_failure():
    def check(target: Target, version: str) -> bool:
        raise CoordinatorError("coordinator: HTTP 503: no leader")

    progress = _Progress([T1], None, "/var/tmp/w.tar")
    _wait([T1], check, "1.0", 0.2, progress, lambda late: {})
    assert progress.results["kvm1"].message == (
        "kvm1: wait connected: agent did not report Connected within 0.2s (last check: coordinator: HTTP 503: "
        "no leader)")


class FakeEngine:
    """Answers the status step as the hosts named would; records the runs it was asked for."""

    def __init__(self, outcomes: dict[str, Outcome]):
        self.outcomes, self.runs = outcomes, []

    def run(self, hosts, steps, listener):
        self.runs.append(({h: r.args for h, r in hosts.items()}, [s.name for s in steps]))
        return {h: {s.name: self.outcomes[h] for s in steps} for h in hosts}


PROBED = {t.name: {"probe": Outcome(True, {"systemd": t is T1})} for t in (T1, T2)}


def test_an_agent_that_did_not_connect_is_failed_with_what_its_service_says(stub):
    """Before, the operator read `agent did not report Connected within 60s` and had to log in to learn why."""
    lines = [*(f'  File "/opt/hoststack/kvmagent/current/lib/m{i}.py", line {i}' for i in range(30)),
             "OSError: [Errno 98] error while attempting to bind: address already in use \x1b[2J",
             "No space left on device"]
    engine = FakeEngine({"kvm1": Outcome(True, {"state": "failed (exit 1)", "lines": lines}),
                         "kvm2": Outcome(False, error="ssh: connection refused")})
    dlog = DeployLog(stub.api_url, "adm")
    progress = _Progress([T1, T2], dlog, "/var/tmp/w.tar")
    _wait([T1, T2], lambda target, version: False, "1.0", 0.2, progress,
          lambda late: _service_words(engine, kvmagent.SPEC, late, PROBED))
    dlog.close()
    kvm1 = progress.results["kvm1"].message
    assert kvm1.startswith("kvm1: wait connected: agent did not report Connected within 0.2s; its service: "
                           "failed (exit 1): ...")
    assert kvm1.endswith(" | OSError: [Errno 98] error while attempting to bind: address already in use \\x1b[2J"
                         " | No space left on device")  # escaped, the newest kept, not read as a full disk
    assert len(kvm1.split("its service: ")[1]) < 650 and stub.entries[-1]["message"] in kvm1
    # where its service could not be read, the message is as it was
    assert progress.results["kvm2"].message == "kvm2: wait connected: agent did not report Connected within 0.2s"
    (args, steps), = engine.runs
    assert steps == ["agent status"] and args["kvm1"]["agent status"] == tasks.status_args(kvmagent.SPEC, True)
    assert args["kvm2"]["agent status"]["systemd"] is False
    assert progress.results["kvm1"].tasks == ["wait connected"]  # no task of its own in the log


def test_a_bug_in_the_check_is_not_retried():
    def check(target: Target, version: str) -> bool:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        _wait([T1], check, "1.0", 10, _Progress([T1], None, "/var/tmp/w.tar"), lambda late: {})


def _flags(group: str, verb: str) -> set[str]:
    """The flags of `hs GROUP VERB`, which the deployer's messages tell the operator to run."""
    from coordinator.cli.commands import GROUPS

    command = next(c for g in GROUPS if g.name == group for c in g.commands if c.verb == verb)
    return {n for a in command.args for n in a.names if n.startswith("--")}


def test_a_target_without_recorded_host_keys_is_never_connected_to(tmp_path, monkeypatch):
    from deployer.deploy import _keyed

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPOS0LRNXfJ8hiMaYQPCc/+hIhD1XvSLgG9KYn7rGONX"
    keyed = Target(name="kvm2", address="198.18.0.3", host_uuid="u2", host_token=None, port=2222,
                   ssh_host_keys=(key,))
    progress = _Progress([T1, keyed], None, "/var/tmp/x")
    assert _keyed([T1, keyed], progress) == [keyed]
    r = progress.results["kvm1"]
    assert (r.ok, r.task) == (False, "ssh host key") and "hs host ssh-host-key kvm1" in r.message
    assert set(re.findall(r"--[a-z-]+", r.message)) <= _flags("host", "ssh-host-key")  # a hint one can follow
    with sshkeys.known_hosts_file((t.address, t.port, t.ssh_host_keys) for t in [keyed]) as name:
        path = Path(name)
        assert path.read_text() == f"[198.18.0.3]:2222 {key}\n" and path.parent == tmp_path  # not in a cache
    assert not path.exists()


class StepEngine:
    """Answers each host's steps as given (host, step) -> Outcome, telling the listener as the engine does."""

    def __init__(self, outcomes: dict[tuple[str, str], Outcome]):
        self.outcomes, self.runs = outcomes, []

    def run(self, hosts, steps, listener):
        self.runs.append({h: r.args for h, r in hosts.items()})
        out = {}
        for h, run in hosts.items():
            for step in (s for s in steps if s.name in run.args):
                listener.started(h, step.name)
                out.setdefault(h, {})[step.name] = self.outcomes[h, step.name]
                listener.finished(h, step.name, self.outcomes[h, step.name])
        return out


OLD = {"wheels": "w0", "config": "c0", "service": "s0"}
UPGRADED = {"kvm1": {"probe": Outcome(True, {"systemd": False, "stamp": OLD, "current": "venv-w0",
                                             "current_version": "0.9"})},
            "kvm2": {"probe": Outcome(True, {"systemd": False, "stamp": {}, "current": None, "current_version": None})}}
WORK = {t.name: HostRun(Connection(t.address), {"install": {}, "config": {}, "service": {}}) for t in (T1, T2)}
SAYS = Outcome(True, {"state": "supervisor running", "lines": ["boom"]})


def upgrade(engine: StepEngine, check, dlog: DeployLog | None = None) -> _Progress:
    """An upgrade to 1.0 of kvm1 (it ran 0.9) and a fresh install of kvm2, both of whose new agents never connect."""
    progress = _Progress([T1, T2], dlog, "/var/tmp/w.tar")
    late = _wait([T1, T2], lambda t, version: version != "1.0" and check(t, version), "1.0", 0.2, progress,
                 lambda late: _late_words(engine, kvmagent.SPEC, "1.0", late, UPGRADED, WORK))
    _roll_back(late, engine, kvmagent.SPEC, UPGRADED, WORK, check, 0.2, progress, Stale([T1, T2], None))
    return progress


def test_an_upgrade_whose_agent_does_not_connect_is_rolled_back_to_the_install_it_replaced(stub):
    """Before, the host was left with the new venv and config and no agent Connected."""
    engine = StepEngine({("kvm1", "agent status"): SAYS, ("kvm2", "agent status"): SAYS,
                         ("kvm1", "rollback"): Outcome(True, {"pid": 7})})
    dlog = DeployLog(stub.api_url, "adm")
    progress = upgrade(engine, lambda t, version: version == "0.9", dlog)
    dlog.close()
    said = ("agent did not report Connected within 0.2s; its service: supervisor running: boom; the new version 1.0 "
            "did not come up")
    assert progress.results["kvm1"].message == (
        f"kvm1: wait connected: {said}, so the previous version 0.9 (venv-w0) is put back; it was restored and is "
        "running (Connected)")
    assert progress.results["kvm2"].message == (
        f"kvm2: wait connected: {said}; nothing to roll back to: no agent was installed before")
    assert (progress.results["kvm1"].ok, progress.results["kvm1"].task) == (False, "wait connected")
    status, rollback = engine.runs
    assert set(status) == {"kvm1", "kvm2"} and set(rollback) == {"kvm1"}
    args = rollback["kvm1"]["rollback"]  # the venv and config it had, the stamp as probed: all steps again next time
    assert (args["previous"], args["config"], args["recorded"]) == ("venv-w0", "/etc/hoststack/kvmagent.toml", OLD)
    logged = [(e["task"], e["phase"], e["ok"]) for e in stub.entries if e["uuid"] == "u1"]
    assert logged == [("wait connected", "before", None), ("wait connected", "after", False),
                      ("rollback", "before", None), ("rollback", "after", True)]


def test_a_rollback_whose_agent_does_not_connect_either_says_so_with_what_its_service_says():
    engine = StepEngine({("kvm1", "agent status"): SAYS, ("kvm2", "agent status"): SAYS,
                         ("kvm1", "rollback"): Outcome(True, {"pid": 7})})
    progress = upgrade(engine, lambda t, version: False)
    assert progress.results["kvm1"].message.endswith(
        "is put back; its rollback failed too: agent did not report Connected within 0.2s; its service: supervisor "
        "running: boom")
    assert len(engine.runs) == 3 and set(engine.runs[2]) == {"kvm1"}  # its status after the rollback


def test_a_rollback_that_fails_on_the_host_says_why():
    gone = Outcome(False, error="/opt/hoststack/kvmagent/venv-w0 is not there any more")
    engine = StepEngine({("kvm1", "agent status"): SAYS, ("kvm2", "agent status"): SAYS, ("kvm1", "rollback"): gone})
    progress = upgrade(engine, lambda t, version: pytest.fail("asked"))
    assert progress.results["kvm1"].message.endswith(
        "is put back; its rollback failed too: /opt/hoststack/kvmagent/venv-w0 is not there any more")


def test_ctrl_c_while_the_restored_agent_is_awaited_ends_the_wait_saying_it_was_restored(interrupt_in):
    engine = StepEngine({("kvm1", "agent status"): SAYS, ("kvm2", "agent status"): SAYS,
                         ("kvm1", "rollback"): Outcome(True, {"pid": 7})})
    progress = _Progress([T1, T2], None, "/var/tmp/w.tar")
    late = _wait([T1, T2], lambda t, version: False, "1.0", 0.2, progress,
                 lambda late: _late_words(engine, kvmagent.SPEC, "1.0", late, UPGRADED, WORK))
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        interrupt_in(0.3)
        _roll_back(late, engine, kvmagent.SPEC, UPGRADED, WORK, lambda t, version: False, 30, progress,
                   Stale([T1, T2], None))
    assert time.monotonic() - t0 < 10
    assert progress.results["kvm1"].message.endswith(
        "is put back; it was restored, but the deploy was interrupted before it reported Connected")


CONFIG_ONLY = {"kvm1": {"probe": Outcome(True, {"systemd": False, "stamp": OLD, "current": "venv-w0",
                                                "current_version": "1.0"})}}


def restart(stub: StubCoordinator, session: str, version: str = "1.0") -> None:
    """kvm1's agent (re)started in `session` and said hello just now."""
    stub.hellos["u1"] = {"version": version, "session": session, "at": time.time()}


def config_only_redeploy(stub: StubCoordinator, timeout: float = 0.5) -> tuple[_Progress, Stale, list[Target]]:
    """A redeploy of kvm1 that writes a new config for the same version and restarts its agent (session `old`), as
    deploy() runs it, through the stub coordinator: the session noted as the service step starts, then the wait."""
    stub.add_host("u1", "host-token")
    restart(stub, "old")
    coordinator = coordinator_check(stub.api_url, "adm")
    progress, stale = _Progress([T1], None, "/var/tmp/w.tar"), Stale([T1], coordinator.session)
    StepEngine({("kvm1", "config"): Outcome(True), ("kvm1", "service"): Outcome(True, {"pid": 7})}).run(
        {"kvm1": HostRun(Connection(T1.address), {"config": {}, "service": {}})}, [tasks.CONFIG, tasks.SERVICE],
        stale.noting(progress, tasks.SERVICE.name))
    assert stale.seen == {"kvm1": {"old"}}
    return progress, stale, _wait([T1], stale.bind(coordinator), "1.0", timeout, progress, lambda late: {})


def test_the_wait_does_not_take_the_stopped_agents_last_heartbeat_for_the_restarted_one(stub):
    """Its heartbeat shows it Connected with the version for heartbeat_timeout more: before, the wait passed on it,
    and a redeploy whose new config the agent could not work with said `deployed`."""
    progress, _, late = config_only_redeploy(stub)
    assert late == [T1] and progress.results["kvm1"].message == (
        "kvm1: wait connected: agent did not report Connected within 0.5s")
    threading.Timer(0.3, restart, (stub, "new")).start()  # the restarted agent connects
    progress, _, late = config_only_redeploy(stub, timeout=10)
    assert late == [] and progress.results["kvm1"].ok


def test_a_rollbacks_wait_takes_neither_the_stopped_agent_nor_the_one_that_did_not_come_up(stub):
    """The restored agent is awaited in a session of its own: not the one before the deploy, nor the new agent's
    (here it connected, then failed); before, the previous agent's last heartbeat passed the wait at once."""
    progress, stale, late = config_only_redeploy(stub)
    restart(stub, "broken")  # the new agent said hello once, then stopped (its heartbeat is still fresh)
    check = stale.bind(coordinator_check(stub.api_url, "adm"))
    engine = StepEngine({("kvm1", "rollback"): Outcome(True, {"pid": 8}), ("kvm1", "agent status"): SAYS})
    _roll_back(late, engine, kvmagent.SPEC, CONFIG_ONLY, {"kvm1": HostRun(Connection(T1.address), {
        "config": {}, "service": {}})}, check, 0.5, progress, stale)
    assert stale.seen == {"kvm1": {"old", "broken"}}
    assert progress.results["kvm1"].message.endswith(
        "its rollback failed too: agent did not report Connected within 0.5s; its service: supervisor running: boom")
    restart(stub, "old")  # the stopped one's session again: still not the restored agent's
    assert not check(T1, "1.0")
    restart(stub, "restored")
    assert check(T1, "1.0")


def test_a_config_only_redeploy_that_failed_says_its_config_is_put_back():
    """Not `the new version 1.0 did not come up, so the previous version 1.0 (venv-w0) is put back`: the venv stays."""
    engine = StepEngine({("kvm1", "agent status"): SAYS})
    words = _late_words(engine, kvmagent.SPEC, "1.0", [T1], CONFIG_ONLY, {"kvm1": HostRun(Connection(T1.address), {
        "config": {}, "service": {}})})
    assert words == {"kvm1": "; its service: supervisor running: boom; the agent did not come up with its new config, "
                             "so the config it had before is put back"}


def test_a_session_that_could_not_be_read_before_the_restart_leaves_the_wait_as_it_was(caplog):
    def unreadable(t: Target) -> str | None:
        raise CoordinatorError("coordinator: timed out")

    stale = Stale([T1], unreadable)
    stale.note("kvm1")
    assert stale.seen == {} and "kvm1: the agent's session could not be read before its restart" in caplog.text
    assert stale.bind(lambda t, version, seen: seen == frozenset())(T1, "1.0")
    stale = Stale([T1], lambda t: None)  # a host that shows none (an agent or coordinator older than sessions)
    stale.note("kvm1")
    assert stale.seen == {}
