"""Network namespaces for simulated hosts, tagged per run and always removed.

A `Run` owns everything a test run creates: namespaces (named `hs<tag>-<role>`), processes started
in them, and a work directory. Teardown kills the processes, deletes the namespaces and the
directory, also on Ctrl-C, SIGTERM or an exception. Nothing here touches the root namespace:
veth pairs are created with both ends directly inside their target namespaces.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from agentkit.proc import run
from testbed.procstat import same_process, start_time

log = logging.getLogger(__name__)
RUN_ROOT = Path(os.environ.get("HS_TESTBED_ROOT", "/tmp/hoststack-runs"))
PHYS_NET = ipaddress.IPv4Network("198.18.0.0/15")


class Netns:
    """One named network namespace; commands and processes run inside it."""

    def __init__(self, run_: Run, name: str):
        self.run = run_
        self.name = name

    def __repr__(self) -> str:
        return f"Netns({self.name})"

    def argv(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def sh(self, *args: str, rcs: Sequence[int] = (0,), timeout: float = 60,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace; returns CompletedProcess (text)."""
        return run(self.argv(list(args)), rcs=rcs, timeout=timeout, input=input)

    def ip(self, *args: str, rcs: Sequence[int] = (0,)) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", self.name, *args], rcs=rcs)

    def popen(self, args: list[str], log_name: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running process in the namespace, owned (and killed) by the run."""
        return self.run.popen(self.argv(args), log_name=log_name, env=env)

    def addrs(self, dev: str) -> list[str]:
        out = self.ip("-o", "-4", "addr", "show", "dev", dev).stdout
        return [line.split()[3] for line in out.splitlines()]


def _claim_tag() -> str:
    """A fresh tag, claimed by creating its run directory: two runs at once (parallel test sessions)
    never share a tag, so neither removes the other's namespaces or files when it closes."""
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    while True:
        tag = secrets.token_hex(2)
        try:
            (RUN_ROOT / f"hs{tag}").mkdir()
        except FileExistsError:
            continue
        _own(RUN_ROOT / f"hs{tag}")  # at once: a sweep skips it
        return tag


def _own(d: Path) -> None:
    """Mark a run directory as this process's: its pid in `owner.pid`, its start time in `owner.started` (so a
    sweep tells this process from a later one given the same pid). The start time has a file of its own, written
    first: a sweep of code older than it reads `owner.pid` as a bare pid, and would take anything else there for
    a dead owner and remove a live run."""
    (d / "owner.started").write_text(str(start_time(os.getpid())))
    (d / "owner.pid").write_text(str(os.getpid()))


class Run:
    """A test run: its tag, work dir, namespaces and processes; `close()` removes all of it."""

    def __init__(self, tag: str | None = None, keep_dir: bool = False):
        self.tag = tag or _claim_tag()
        self.prefix = f"hs{self.tag}"
        self.dir = RUN_ROOT / self.prefix
        self.dir.mkdir(parents=True, exist_ok=True)
        _own(self.dir)
        self.keep_dir = keep_dir or os.environ.get("HS_KEEP_RUNS") == "1"
        self.namespaces: list[Netns] = []
        self.procs: list[subprocess.Popen[Any]] = []  # text or bytes: the run only stops them
        self._closed = False
        self._owner = os.getpid()  # forked children (pyroute2 netns helpers) inherit handlers: not theirs
        self._subnets = PHYS_NET.subnets(new_prefix=24)
        self._uplinks = itertools.count()
        atexit.register(self.close)
        self._old_term = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._owner:
            os._exit(128 + signum)
        self.close()
        raise SystemExit(128 + signum)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, name: str) -> Path:
        return self.dir / name

    def subnet(self) -> ipaddress.IPv4Network:
        """A fresh /24 from 198.18.0.0/15 for a simulated physical network."""
        return next(self._subnets)

    def uplink(self) -> str:
        """A fresh physical interface name for an L2 no agent builds (the coordinator takes one untagged L2 per
        interface)."""
        return f"up{next(self._uplinks)}"

    def netns(self, role: str) -> Netns:
        name = f"{self.prefix}-{role}"
        run(["ip", "netns", "add", name])
        ns = Netns(self, name)
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def veth(self, a: Netns, a_name: str, b: Netns, b_name: str, mtu: int | None = None) -> None:
        """A veth pair with one end in each namespace (never in the root namespace)."""
        extra = ["mtu", str(mtu)] if mtu else []
        run(["ip", "link", "add", a_name, "netns", a.name, *extra, "type", "veth",
             "peer", "name", b_name, "netns", b.name])
        a.ip("link", "set", a_name, "up")
        b.ip("link", "set", b_name, "up")

    def popen(self, argv: list[str], log_name: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.path(f"{log_name}.log"), "ab") if log_name else subprocess.DEVNULL  # noqa: SIM115
        p = subprocess.Popen(  # noqa: S603
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[Any], timeout: float = 5, group: bool = True) -> None:
        """Stop one owned process (SIGTERM, then SIGKILL after `timeout`): its whole process group, or with
        `group=False` the process alone (what it started survives, as libvirtd's VMs do). A process already
        reaped (a `poll` or `wait` saw it end) is not signalled, nor its group: its pid is free, and with the
        kernel's 32,768 pids and the thousands a suite spawns it was another test's by then (a coordinator of
        another test, the leader of a group of its own, died of a `killpg` meant for a process gone long
        before)."""
        def send(sig: signal.Signals) -> None:
            if p.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                if group:
                    os.killpg(p.pid, sig)
                else:
                    p.send_signal(sig)
        send(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def kill(self, p: subprocess.Popen[Any]) -> None:
        """SIGKILL one owned process (not its group), as a crash would: no goodbye, children survive."""
        p.kill()
        p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def close(self) -> None:
        if self._closed or os.getpid() != self._owner:
            return
        self._closed = True
        for p in reversed(self.procs[:]):
            self.stop(p)
        for ns in reversed(self.namespaces):
            kill_namespace(ns.name)
        remove_tagged(self.prefix)  # also what agents under test created with the run's prefix
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.release()

    def release(self) -> None:
        """Stop owning cleanup at exit (the demo leaves its run up; `teardown` removes it later)."""
        atexit.unregister(self.close)
        with contextlib.suppress(Exception):
            signal.signal(signal.SIGTERM, self._old_term)

    def detach(self) -> None:
        """Leave everything running; record the processes so `teardown(prefix)` can stop them: a line
        `<pid> started=<start time>` each (a process already reaped is left out: its pid is free)."""
        alive = [(p.pid, start_time(p.pid)) for p in self.procs if p.returncode is None]
        (self.dir / "pids").write_text("".join(f"{pid} started={t}\n" for pid, t in alive if t is not None))
        (self.dir / "owner.pid").write_text("detached")
        self._closed = True
        self.release()


def kill_namespace(name: str) -> None:
    """Kill every process left in a namespace, then delete it."""
    for attempt in range(10):
        pids = run(["ip", "netns", "pids", name], rcs=(0, 1, 255)).stdout.split()
        if not pids:
            break
        sig = signal.SIGKILL if attempt >= 4 else signal.SIGTERM
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), sig)
        time.sleep(0.2)
    run(["ip", "netns", "del", name], rcs=(0, 1, 255))


def tagged_namespaces(prefix: str) -> list[str]:
    names = run(["ip", "netns", "list"]).stdout.splitlines()
    return [n.split(" ")[0] for n in names if n.startswith(prefix)]


def remove_tagged(prefix: str) -> list[str]:
    found = tagged_namespaces(prefix)
    for ns in found:
        kill_namespace(ns)
    return found


def recorded_pids(path: Path) -> list[tuple[int, int | None]]:
    """The processes `Run.detach` recorded: (pid, start time), the start time None on a line from before they
    were kept (a bare pid). Lines that say neither are skipped."""
    found: list[tuple[int, int | None]] = []
    for line in path.read_text().splitlines() if path.exists() else []:
        pid, _, started = line.strip().partition(" ")
        with contextlib.suppress(ValueError):
            found.append((int(pid), int(started.removeprefix("started=")) if started else None))
    return found


def teardown(prefix: str) -> list[str]:
    """Remove a detached run: its recorded processes' groups, every namespace with its prefix, its directory.

    A recorded pid whose process has gone, or whose start time is not the recorded one (the pid is another
    process's now: a demo left up long, or thousands spawned since), is not signalled. One recorded without a
    start time (by code from before they were kept) is signalled as it always was: otherwise `demo-down` would
    leave such a demo's processes outside its namespaces running. A group found ours is SIGKILLed after the grace
    unless its pid shows another start time by then: its leader may have gone while members live on, and the
    kernel hands out no pid still in use as a group's id."""
    d = RUN_ROOT / prefix
    ours = [(pid, t) for pid, t in recorded_pids(d / "pids") if same_process(pid, t)]
    for pid, _ in ours:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    if ours:
        time.sleep(0.5)
    for pid, t in ours:
        if t is None or start_time(pid) in (t, None):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    removed = remove_tagged(prefix)
    shutil.rmtree(d, ignore_errors=True)
    return removed


def sweep_stale() -> list[str]:
    """Remove what earlier runs left behind when their owner died (SIGKILL, power loss). An owner is alive while
    its pid has the start time in `owner.started`: a later process given the same pid is not it. A run without
    that file (made by code from before it was written) is alive while its pid exists, as before."""
    removed: list[str] = []
    if not RUN_ROOT.exists():
        return removed
    for d in RUN_ROOT.iterdir():
        try:
            owner = (d / "owner.pid").read_text()
            if owner == "detached":
                continue  # a demo left up on purpose: `make demo-down` removes it
            started = d / "owner.started"
            if same_process(int(owner), int(started.read_text()) if started.exists() else None):
                continue
        except (OSError, ValueError):
            pass
        removed += teardown(d.name)
    return removed
