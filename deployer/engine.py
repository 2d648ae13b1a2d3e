"""The deployer's only contact with ansible-core: run steps on many hosts over SSH.

Everything that depends on the ansible-core API lives here (2.19: `init_plugin_loader`, data
tagging's `trust_as_template`, `TaskQueueManager` and its callback dispatch), so an upgrade touches
this file only. Callers describe work as `Call`s (a function of `deployer.remote` run with JSON
arguments) and `Upload`s, each host as a `HostRun` naming the steps it runs, and get an `Outcome` per
host and step plus `Listener` events just before and after every step a host runs. `Engine.stop` ends a
host's run from another thread (its deploy lock was lost): no further step runs there. Ctrl-C (SIGINT) ends a run
with KeyboardInterrupt once ansible's workers and their ssh are gone, each step under way reported as interrupted.

Speed comes from doing less, fixed here: no fact gathering, no interpreter discovery, pipelining (a
module costs one ssh invocation), one SSH ControlPersist master per host that every call and file
transfer reuses, and no module logging to the target's syslog (arguments carry the host token).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ansible import context
from ansible.executor.task_queue_manager import TaskQueueManager
from ansible.executor.task_result import CallbackTaskResult
from ansible.inventory.host import Host
from ansible.inventory.manager import InventoryManager
from ansible.module_utils.common.collections import ImmutableDict
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play import Play
from ansible.playbook.task import Task
from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import connection_loader, init_plugin_loader
from ansible.template import trust_as_template
from ansible.vars.manager import VariableManager
from pydantic import BaseModel, ValidationError

from deployer.model import Outcome

PYTHON = "/usr/bin/python3"
CONNECTION = "hoststack_ssh"  # ansible.builtin.ssh that keeps ssh's reason for a failed login (connection_plugins/)
# ansible's temp files on a host; absolute: saves the round trip that expands ~. In root's home (deploys log in
# as root), where no other user can plant the directory: ansible takes an existing one as it is (mkdir -p), and
# writes files as root into it, following symlinks
REMOTE_TMP = "/root/.ansible-hoststack"
GROUP = "hoststack"
# a step under way when Ctrl-C ended the run: its host may finish it (nothing there stops it), and the next deploy
# goes on from what that host then has (`deployer.remote.host.dispatch` makes it wait for the step to end)
INTERRUPTED = "the deploy was interrupted while this step ran; the host may still finish it"
# what a deploy interrupted by Ctrl-C ends with (`hs deploy`, `python -m deployer`: exit status 130)
DEPLOY_INTERRUPTED = ("the deploy was interrupted: its deploy locks are released; a step under way may still finish "
                      "on its host, and the next deploy goes on from what each host has")
# ansible's ssh plugin imports cryptography's DSA, which warns at every deploy: a dependency's notice, not the
# operator's, and in the coordinator's deployer child it stood as the reason of a deploy that failed otherwise
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"ansible\.")


@dataclass(frozen=True)
class Connection:
    """How to reach one host over SSH (password or key); `local`: this machine, no SSH."""

    address: str
    port: int = 22
    user: str = "root"
    password: str | None = None
    key_file: str | None = None
    local: bool = False


@dataclass(frozen=True)
class Call:
    """Run `function` of the remote program on the host: JSON arguments in, a JSON object out, of `reply`'s shape
    when given (a host may answer anything: what does not fit fails the step on that host alone)."""

    name: str
    function: str
    reply: type[BaseModel] | None = None


@dataclass(frozen=True)
class Upload:
    """Copy one local file to the same path on every host that runs this step."""

    name: str
    src: str
    dest: str


Step = Call | Upload


@dataclass
class HostRun:
    """One host's part of a run: how to connect and, per step it runs, that step's arguments."""

    connection: Connection
    args: dict[str, Any]


class Listener(Protocol):
    def started(self, host: str, step: str) -> None: ...

    def finished(self, host: str, step: str, outcome: Outcome) -> None: ...


@dataclass(frozen=True)
class SshOptions:
    """Controller-side ssh settings shared by every host of a run."""

    control_path_dir: str
    known_hosts: str  # every host's recorded keys: the only ones ssh accepts (StrictHostKeyChecking=yes)
    ssh_executable: str = "ssh"
    connect_timeout: int = 10
    persist_s: int = 60
    forks: int = 10


_initialized = False


def _init(forks: int) -> None:
    """Process-wide ansible setup the CLI would otherwise do.

    Passwords go through ansible's ssh_askpass mechanism, which runs the `ansible` script found on
    PATH; it sits beside our interpreter. (The sshpass mechanism would mistake a failing module's exit
    code 1-6 for an sshpass error and hide the cause.)
    """
    global _initialized
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bindir, os.environ.get("PATH", os.defpath)])
    context.CLIARGS = ImmutableDict(connection="ssh", forks=forks, check=False, diff=False, verbosity=0,
                                    become=False, become_method="sudo", become_user=None, module_path=None,
                                    syntax=False, start_at_task=None)
    if not _initialized:
        init_plugin_loader()
        connection_loader.add_directory(str(Path(__file__).parent / "connection_plugins"))
        _initialized = True


def _reply(out: str, model: type[BaseModel] | None) -> Outcome:
    """A step's answer as an Outcome: its JSON object, checked against `model`; a failure saying what is wrong."""
    try:
        data = json.loads(out) if out else {}
        if model is not None:
            return Outcome(ok=True, data=model.model_validate(data).model_dump())
    except ValidationError as e:
        error = e.errors()[0]
        where = ".".join(map(str, error["loc"])) or "the answer"
        return Outcome(ok=False, error=f"the host's answer does not fit: {where}: {error['msg']}")
    except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than json parses
        return Outcome(ok=False, error=f"the host's answer is not JSON: {type(e).__name__}")
    if not isinstance(data, dict):
        return Outcome(ok=False, error="the host's answer is not a JSON object")
    return Outcome(ok=True, data=data)


def _failure_text(r: Mapping[str, Any]) -> str:
    """The most specific text ansible kept for a failed step."""
    if r.get("rc") == 2 and r.get("stderr"):  # deployer.remote's one-line cause
        return str(r["stderr"]).strip().splitlines()[-1]
    parts = [r.get("msg") or "", r.get("module_stderr") or "", r.get("stderr") or ""]
    return " ".join(p.strip() for p in parts if p and p.strip() != "non-zero return code")


class _Events(CallbackBase):
    """Translates ansible's runner callbacks into Listener events and Outcomes."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "hoststack_events"

    def __init__(self, hosts: Mapping[str, HostRun], listener: Listener, stopped: Mapping[str, str],
                 replies: Mapping[str, type[BaseModel] | None]):
        super().__init__()
        self.hosts = hosts
        self.replies = replies  # step -> the shape of its answer (Call.reply)
        self.listener = listener
        self.stopped = stopped  # host -> why its steps are skipped (Engine.stop)
        self.outcomes: dict[str, dict[str, Outcome]] = {h: {} for h in hosts}
        self._ended: set[str] = set()  # stopped hosts whose failure was reported
        self._running: dict[str, str] = {}  # host -> the step it runs now

    def _runs(self, host: str, step: str) -> bool:
        return step in self.hosts[host].args and host not in self._ended

    def v2_runner_on_start(self, host: Host, task: Task) -> None:
        if self._runs(host.get_name(), task.get_name()):
            self._running[host.get_name()] = task.get_name()
            self.listener.started(host.get_name(), task.get_name())

    def interrupted(self) -> None:
        """The run was interrupted (Ctrl-C): each step under way fails saying so."""
        for host, step in list(self._running.items()):
            self._running.pop(host)
            self.outcomes[host][step] = outcome = Outcome(ok=False, error=INTERRUPTED)
            self.listener.finished(host, step, outcome)

    def v2_runner_on_skipped(self, result: CallbackTaskResult) -> None:
        """A step of a stopped host: the first fails with the reason, the others are not steps it ran."""
        host = result.host.get_name()
        if host in self.stopped and self._runs(host, result.task.get_name()):
            self._done(result, Outcome(ok=False, error=self.stopped[host]))
            self._ended.add(host)

    def _done(self, result: CallbackTaskResult, outcome: Outcome) -> None:
        host, step = result.host.get_name(), result.task.get_name()
        if self._runs(host, step):
            self._running.pop(host, None)
            self.outcomes[host][step] = outcome
            self.listener.finished(host, step, outcome)

    def v2_runner_on_ok(self, result: CallbackTaskResult) -> None:
        self._done(result, _reply(result.result.get("stdout") or "", self.replies.get(result.task.get_name())))

    def v2_runner_on_failed(self, result: CallbackTaskResult, ignore_errors: bool = False) -> None:
        self._done(result, Outcome(ok=False, error=_failure_text(result.result)))

    def v2_runner_on_unreachable(self, result: CallbackTaskResult) -> None:
        self._done(result, Outcome(ok=False, error=str(result.result.get("msg", "")), unreachable=True))


class Engine:
    """Runs a list of steps over many hosts in one TaskQueueManager run (hosts in parallel)."""

    def __init__(self, program: str, ssh: SshOptions):
        self.program = program
        self.ssh = ssh
        self._stopped: dict[str, str] = {}  # host -> why it runs no more steps
        self._running: dict[str, Host] = {}  # the current run's inventory hosts

    def stop(self, host: str, reason: str) -> None:
        """Run no further step on `host`, in this run or a later one: the next one it would run fails with
        `reason`. Safe from another thread: a run reads each host's `hs_stop` as it queues a step there."""
        self._stopped[host] = reason
        if (running := self._running.get(host)) is not None:
            running.set_variable("hs_stop", True)

    def stopped(self, host: str) -> str | None:
        """Why `host` was stopped; None while it was not."""
        return self._stopped.get(host)

    def _host_vars(self, c: Connection) -> dict[str, Any]:
        if c.local:
            return {"ansible_connection": "local", "ansible_python_interpreter": PYTHON, "ansible_pipelining": True,
                    "ansible_remote_tmp": REMOTE_TMP, "ansible_no_target_syslog": True}
        s = self.ssh
        ssh_args = (f"-o ControlMaster=auto -o ControlPersist={s.persist_s}s -o StrictHostKeyChecking=yes "
                    f"-o UserKnownHostsFile={s.known_hosts} -o GlobalKnownHostsFile=/dev/null")
        v: dict[str, Any] = {
            "ansible_connection": CONNECTION, "ansible_host": c.address, "ansible_port": c.port, "ansible_user": c.user,
            "ansible_python_interpreter": PYTHON, "ansible_pipelining": True, "ansible_ssh_args": ssh_args,
            "ansible_ssh_executable": s.ssh_executable, "ansible_control_path_dir": s.control_path_dir,
            "ansible_ssh_transfer_method": "piped", "ansible_timeout": s.connect_timeout,
            "ansible_no_target_syslog": True, "ansible_remote_tmp": REMOTE_TMP,
        }
        if c.password is not None:
            v["ansible_password"] = c.password
        if c.key_file:
            v["ansible_ssh_private_key_file"] = c.key_file
        return v

    def _task(self, i: int, step: Step) -> dict[str, Any]:
        """One ansible task; it runs on a host only when the host's `hs_on_<i>` is true and it was not stopped."""
        if isinstance(step, Call):
            action = {"ansible.builtin.command": {
                "argv": [PYTHON, "-c", self.program, step.function],
                "stdin": trust_as_template(f"{{{{ hs_in_{i} }}}}"), "stdin_add_newline": False}}
        else:
            action = {"ansible.builtin.copy": {"src": step.src, "dest": step.dest, "mode": "0644"}}
        when = [trust_as_template(f"hs_on_{i}"), trust_as_template("not hs_stop")]
        return {"name": step.name, **action, "when": when}

    def run(self, hosts: Mapping[str, HostRun], steps: Sequence[Step],
            listener: Listener) -> dict[str, dict[str, Outcome]]:
        """Run `steps` in order; a host stops at its first failure, the others go on."""
        _init(self.ssh.forks)
        loader = DataLoader()
        inventory = InventoryManager(loader=loader, parse=False)  # in memory only: nothing to parse
        inventory.add_group(GROUP)
        for name, h in hosts.items():
            inventory.add_host(name, group=GROUP)
            host = self._running[name] = inventory.get_host(name)
            for k, v in self._host_vars(h.connection).items():
                host.set_variable(k, v)
            host.set_variable("hs_stop", name in self._stopped)
            for i, step in enumerate(steps):
                host.set_variable(f"hs_on_{i}", step.name in h.args)
                host.set_variable(f"hs_in_{i}", json.dumps(h.args.get(step.name)))
        variables = VariableManager(loader=loader, inventory=inventory)
        play = Play().load({"name": "hoststack deploy", "hosts": GROUP, "gather_facts": False,
                            "tasks": [self._task(i, s) for i, s in enumerate(steps)]},
                           variable_manager=variables, loader=loader)
        events = _Events(hosts, listener, self._stopped, {s.name: s.reply for s in steps if isinstance(s, Call)})
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        tqm = TaskQueueManager(inventory=inventory, variable_manager=variables, loader=loader, passwords={},
                               forks=self.ssh.forks)
        try:
            events._init_callback_methods()
            tqm._callback_plugins[:] = [events]  # ours is the only callback: load_callbacks() then adds none
            tqm.run(play)
        except KeyboardInterrupt:  # ansible's handler raised it, once it sent its workers SIGINT (they and ssh exit)
            events.interrupted()
            raise
        finally:
            self._running = {}
            tqm.cleanup()
            loader.cleanup_all_tmp_files()
            for s, handler in saved.items():
                signal.signal(s, handler)
        return events.outcomes
