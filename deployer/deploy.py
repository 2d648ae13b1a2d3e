"""Deploy an agent to hosts: probe, plan, run the few steps a host needs, wait until its agent connects.

`deploy()` is what `hs deploy <agent> HOST...` and the coordinator (host added, or reconnected with an
agent version other than `current_version()`) call. Hosts run in parallel; a host that fails stops at
that task with ONE message naming host, task and cause, and the others go on. Before and after every
task an entry goes to the coordinator's deploy log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from agentkit import config, pki, sshkeys
from agentkit.addr import same_host_key
from agentkit.errors import HostStackError
from agentkit.terminal import printable
from deployer import cephagent, consoleproxy, imagestore, kvmagent, render, tasks, wheelhouse
from deployer.agentspec import AgentSpec
from deployer.causes import cause
from deployer.coordinator_api import (
    INTERRUPTED,
    Api,
    DeployLocks,
    certificate,
    coordinator_api_tokens,
    coordinator_check,
    coordinator_tokens,
)
from deployer.deploylog import DeployLog
from deployer.engine import Connection, Engine, HostRun, SshOptions
from deployer.errors import CoordinatorError, InvalidRequest
from deployer.model import ApiTokenSource, ConnectedCheck, Outcome, Result, Target, TokenSource
from deployer.remote import host as remote_host
from deployer.sessions import Stale
from deployer.wheelhouse import Bundle

log = logging.getLogger(__name__)
T = TypeVar("T")
LOCK_LOST = "deploy lock lost: another deploy may be working on the host; nothing more was done here"
LIMIT = 1000  # characters of one step's message (the deploy log takes 4000)
SAID = 600  # characters of its service's last lines in the message of an agent that did not connect
AGENTS = {s.name: s for s in (kvmagent.SPEC, cephagent.SPEC, consoleproxy.SPEC, imagestore.SPEC)}
REPO = Path(__file__).resolve().parents[1]


class DeploySettings(BaseModel):
    """The deployer's parameters: /etc/hoststack/deployer.toml, each also HS_DEPLOYER_<KEY>."""

    source_dir: Path = Field(REPO, description="HostStack source tree the agent wheel is built from")
    cache_dir: Path = Field(Path("/var/cache/hoststack/deployer"), description="built wheels and wheelhouses")
    find_links: list[str] = Field([], description="local wheel dirs/URLs pip may use to build dependency wheels")
    no_index: bool = Field(False, description="build from find_links alone, asking no package index (a control "
                           "node's deployer: hs-ctl install ships the wheels)")
    ssh_executable: str = Field("ssh", description="ssh client the controller runs")
    ca: Path | None = Field(None, description="CA certificate that verifies the coordinator and that agents get "
                            "(default /etc/hoststack/pki/ca.pem)")
    control_path_dir: Path | None = Field(None, description="SSH ControlPersist sockets; default <cache_dir>/cp")
    forks: int = Field(10, ge=1, description="hosts worked on at once")
    connect_timeout: int = Field(10, ge=1, description="seconds for an SSH connection")
    connected_timeout: float = Field(60, gt=0, description="seconds to wait for the agent to report Connected")
    refresh_index: bool = Field(True, description="apt-get update once when a missing package has no candidate")
    extra_packages: list[str] = Field([], description="Debian packages every host also needs")
    lock_wait: float = Field(900, ge=0, description="seconds to wait while another deploy holds a host's lock")

    def index(self) -> wheelhouse.Index:
        return wheelhouse.Index(tuple(self.find_links), self.no_index)


def load_settings(path: str | Path | None = None) -> DeploySettings:
    return config.load(DeploySettings, "deployer", path)


def current_version(settings: DeploySettings | None = None) -> str:
    """The version agents report (agentkit.__version__) once a deploy from the configured source ran."""
    return wheelhouse.source_version((settings or load_settings()).source_dir)


def needs_upgrade(reported_version: str, settings: DeploySettings | None = None) -> bool:
    """True when an agent reporting `reported_version` should be redeployed (cheap: reads one small file)."""
    return reported_version != current_version(settings)


class _Progress:
    """The engine's listener: times every task, posts the deploy log, keeps each host's first failure."""

    def __init__(self, targets: Sequence[Target], dlog: DeployLog | None, upload_dest: str):
        self.targets = {t.name: t for t in targets}
        self.results = {t.name: Result(t.name) for t in targets}
        self.dlog = dlog
        self.upload_dest = upload_dest
        self.t0 = time.monotonic()
        self._start: dict[tuple[str, str], float] = {}
        self._last: dict[str, float] = {}

    def _post(self, host: str, task: str, phase: str, ok: bool | None, ms: int | None, message: str) -> None:
        if self.dlog:
            entry = {"host": host, "task": task, "phase": phase, "ok": ok, "duration_ms": ms, "message": message}
            self.dlog.post(self.targets[host].host_uuid, entry)

    def started(self, host: str, step: str) -> None:
        self._start[(host, step)] = time.monotonic()
        self._post(host, step, "before", None, None, tasks.DESCRIPTIONS.get(step, ""))

    def finished(self, host: str, step: str, outcome: Outcome) -> None:
        now = self._last[host] = time.monotonic()
        ms = round((now - self._start.pop((host, step), now)) * 1000)
        r = self.results[host]
        r.tasks.append(step)
        if step == tasks.ROLLBACK.name:  # after the wait's failure, which stays the host's: what became of it
            message = printable(_summary(step, outcome.data) if outcome.ok else outcome.error, LIMIT)
            r.changed, r.message = True, f"{r.message}; {message}"
        elif outcome.ok:
            message = printable(_summary(step, outcome.data), LIMIT)
            r.changed = r.changed or step not in (tasks.PROBE.name, tasks.WAIT)
        else:
            # the wait's message is the controller's own, with the agent's words in it (no host's cause to find)
            text = outcome.error if step == tasks.WAIT else cause(outcome, self.upload_dest if step == tasks.UPLOAD
                                                                  else None)
            message = printable(text, LIMIT)
            r.ok, r.task, r.message = False, step, f"{host}: {step}: {message}"
        self._post(host, step, "after", outcome.ok, ms, message)

    def ran(self, host: str, step: str) -> bool:
        r = self.results[host]
        return step in r.tasks and (r.ok or r.task != step)

    def finish(self, version: str) -> dict[str, Result]:
        for r in self.results.values():
            r.seconds = round(self._last.get(r.host, self.t0) - self.t0, 3)
            if not r.tasks:  # ansible reported nothing for this host
                r.ok, r.task, r.message = False, tasks.PROBE.name, f"{r.host}: probe: no result"
            if r.ok:
                r.message = f"{r.host}: {'deployed ' + version if r.changed else 'unchanged'}"
                log.info(r.message)
            else:
                log.error(r.message)
        return self.results


def _summary(step: str, data: dict[str, Any]) -> str:
    """The 'after' message of a task that succeeded."""
    if step == tasks.PROBE.name:
        missing = ", ".join(data["missing"]) or "none"
        running = "running" if data["running"] else "not running"
        return f"stamp {sorted(data['stamp']) or 'absent'}, missing packages: {missing}, agent {running}"
    if step == tasks.PACKAGES.name:
        return "installed " + " ".join(data["installed"])
    if step == tasks.INSTALL.name:
        return f"installed into {data['venv']}"
    if step == tasks.SERVICE.name:
        return f"started, supervisor pid {data['pid']}" if data.get("pid") else "restarted by systemd"
    if step == tasks.WAIT:
        return "Connected"
    if step == tasks.ROLLBACK.name:
        return "it was restored and is running (Connected)"
    if step == tasks.CLEAN_UP.name:
        return "removed the venv and config the agent had before"
    return "ok"


def _connection(t: Target) -> Connection:
    return Connection(address=t.address, port=t.port, user=t.user, password=t.password, key_file=t.key_file)


def _ask(t: Target, step: str, question: Callable[[], T], progress: _Progress) -> T | None:
    """The coordinator's answer to `question` about `t`; None (the host failed, logged as `step`) when it
    cannot say."""
    try:
        return question()
    except CoordinatorError as e:
        progress.started(t.name, step)
        progress.finished(t.name, step, Outcome(ok=False, error=str(e)))
        return None


def _token(t: Target, probe: dict[str, Any], tokens: TokenSource, progress: _Progress) -> str | None:
    """The host token to write: `t`'s own, else the coordinator's answer about the token the agent presents; None
    (the host failed, logged) when the coordinator cannot say. While it keeps a token the agent renewed, the config
    keeps its own: the agent goes on presenting the renewed one, and nothing changes."""
    if t.host_token is not None:
        return t.host_token
    presented = probe.get("token")
    answer = _ask(t, tasks.TOKEN, lambda: tokens(t, presented), progress)
    return probe["config_token"] if presented is not None and answer == presented else answer


def _keyed(targets: Sequence[Target], progress: _Progress) -> list[Target]:
    """The targets whose SSH host keys are recorded; the others failed (logged): ssh never trusts a first use."""
    for t in targets:
        if not t.ssh_host_keys:
            progress.started(t.name, tasks.HOST_KEY)
            progress.finished(t.name, tasks.HOST_KEY, Outcome(ok=False, error=(
                f"no SSH host key recorded for host {t.name}: `hs host ssh-host-key {t.name}` reads and records "
                "it (compare its fingerprint), or records the one given with --ssh-host-key")))
    return [t for t in targets if t.ssh_host_keys]


class _Tls:
    """What a deploy brings for TLS when agents reach the coordinator over https: the CA every agent trusts,
    and a certificate (issued by the coordinator for the host's address) for an agent that never dials in."""

    def __init__(self, spec: AgentSpec, coordinator_url: str, ca: Path, api: Api):
        self.spec, self.api = spec, api
        self.https = coordinator_url.startswith("https:")
        if self.https and not ca.exists():
            raise InvalidRequest(f"agents reach the coordinator over https but there is no CA certificate at {ca} "
                                 "to give them (deployer setting ca)", field="ca")
        layout = pki.Layout()
        self.files: tuple[tasks.File, ...] = ((str(layout.ca), ca.read_text(), 0o644),) if self.https else ()
        self.cert, self.key = str(layout.cert(spec.name)), str(layout.key(spec.name))

    def certificate(self, t: Target, stamp: dict[str, str], progress: _Progress
                    ) -> tuple[tuple[tasks.File, ...], float] | None | Literal[False]:
        """The agent's renewed certificate files and expiry; None when none is due; False when the coordinator
        could not issue one (the host failed, logged)."""
        if not (self.https and self.spec.own_certificate and render.certificate_due(stamp)):
            return None
        try:
            chain, key, expires = certificate(self.api, t, self.spec.name)
        except CoordinatorError as e:
            progress.started(t.name, tasks.CERTIFICATE)
            progress.finished(t.name, tasks.CERTIFICATE, Outcome(ok=False, error=str(e)))
            return False
        return ((self.cert, chain, 0o644), (self.key, key, 0o600)), expires


@dataclass
class _Configs:
    """What each host's config is made of: the host token, the tokens of the agent's own API (for an agent
    that serves one), the TLS files. A host the coordinator cannot answer for failed (logged)."""

    spec: AgentSpec
    bundle: Bundle
    coordinator_url: str
    refresh_index: bool
    tls: _Tls
    tokens: TokenSource
    api_tokens: ApiTokenSource
    progress: _Progress

    def desired(self, t: Target, probe: dict[str, Any]) -> tasks.Desired | None:
        if (token := _token(t, probe, self.tokens, self.progress)) is None:
            return None
        api = _ask(t, tasks.API_TOKEN, lambda: self.api_tokens(t), self.progress) if self.spec.agent_api else None
        if self.spec.agent_api and api is None:
            return None
        if (cert := self.tls.certificate(t, probe["stamp"], self.progress)) is False:
            return None
        config = render.agent_config(self.spec, self.coordinator_url, t.host_uuid, token, api)
        return tasks.Desired(self.bundle, config, self.refresh_index, self.tls.files, cert or None)

    def work(self, probed: Sequence[Target], probes: dict[str, dict[str, Outcome]]) -> dict[str, HostRun]:
        """The steps each probed host needs: none when its probe failed, its config could not be made (logged)
        or it is up to date."""
        work: dict[str, HostRun] = {}
        for t in probed:
            outcome = probes[t.name].get(tasks.PROBE.name)
            if outcome is None or not outcome.ok or (want := self.desired(t, outcome.data)) is None:
                continue
            if plan := tasks.plan(self.spec, want, outcome.data):
                work[t.name] = HostRun(_connection(t), plan)
        return work


def _each(fn: Callable[[Target], T], targets: Sequence[Target], interrupted: Callable[[], None]) -> list[T]:
    """`fn` of every target, on threads at once. An interrupt (Ctrl-C) calls `interrupted` before the threads are
    joined, for them to stop waiting (for a lock, for Connected) at once rather than until their timeouts."""
    with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
        try:
            return list(pool.map(fn, targets))
        except BaseException:
            interrupted()
            raise


def _lock(targets: Sequence[Target], locks: DeployLocks, progress: _Progress) -> list[Target]:
    """The targets whose deploy lock this deploy now holds; the others failed (logged) with the holder's name. A
    target at the address of one before it fails at once: the lock is its address's too, and this deploy's own
    (two hosts of a kind at one address, added before the coordinator refused that, are one machine)."""
    first: dict[str, Target] = {}
    for t in targets:
        first.setdefault(same_host_key(t.address), t)

    def failed(t: Target, error: str) -> None:
        progress.started(t.name, tasks.LOCK)
        progress.finished(t.name, tasks.LOCK, Outcome(ok=False, error=error))

    def one(t: Target) -> Target | None:
        if (twin := first[same_host_key(t.address)]) is not t:
            failed(t, f"host {twin.name} of this deploy is at its address, {t.address}: one machine is deployed once")
            return None
        try:
            locks.take(t)
            return t
        except CoordinatorError as e:
            failed(t, str(e))
            return None

    return [t for t in _each(one, targets, locks.cancel) if t is not None]


def _holding(targets: Sequence[Target], engine: Engine, progress: _Progress) -> list[Target]:
    """The targets whose lock this deploy still holds (it asks nothing of the coordinator for the others, as
    a new token could void the one another deploy writes now); those lost after their probe failed (logged)."""
    for t in targets:
        if (why := engine.stopped(t.name)) is not None and progress.results[t.name].ok:
            progress.started(t.name, tasks.LOCK)
            progress.finished(t.name, tasks.LOCK, Outcome(ok=False, error=why))
    return [t for t in targets if engine.stopped(t.name) is None]


class _Unlogged:
    """The listener of the one step that is no task of the deploy: reading the service of an agent that did not
    connect (its words go into the wait's message; its own failure nowhere)."""

    def started(self, host: str, step: str) -> None:
        pass

    def finished(self, host: str, step: str, outcome: Outcome) -> None:
        pass


def _last_words(state: str, lines: list[str]) -> str:
    """`; its service: <state>: <its last lines>`, escaped, the newest of them kept within SAID characters."""
    said = printable(" | ".join(lines))
    said = said if len(said) <= SAID else "..." + said[3 - SAID:]
    return f"; its service: {printable(state)}" + (f": {said}" if said else "")


def _service_words(engine: Engine, spec: AgentSpec, late: Sequence[Target],
                   probes: dict[str, dict[str, Outcome]]) -> dict[str, str]:
    """What the service of each agent that did not connect says of itself (`_last_words`), in one run; nothing for
    a host where it could not be read: the deploy failed there for its own reason, which stays the one shown."""
    runs = {t.name: HostRun(_connection(t), {tasks.STATUS.name: tasks.status_args(
        spec, probes[t.name][tasks.PROBE.name].data["systemd"])}) for t in late}
    outcomes = engine.run(runs, [tasks.STATUS], _Unlogged())
    return {host: _last_words(o.data["state"], o.data["lines"])
            for host, steps in outcomes.items() if (o := steps.get(tasks.STATUS.name)) is not None and o.ok}


def _poll(t: Target, check: ConnectedCheck, version: str, timeout: float, stop: threading.Event) -> str | None:
    """None once `check` says `t`'s agent is Connected with `version`; else why not: INTERRUPTED when `stop` is set,
    or the timeout (with the last failed check)."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            if check(t, version):
                return None
        except (HostStackError, OSError) as e:  # the coordinator may be restarting: keep polling, remember why
            last = f" (last check: {e})"
        if stop.wait(0.5):
            return INTERRUPTED
    return f"agent did not report Connected within {timeout:g}s{last}"


def _wait(targets: list[Target], check: ConnectedCheck, version: str, timeout: float, progress: _Progress,
          words: Callable[[Sequence[Target]], dict[str, str]]) -> list[Target]:
    """Poll `check` for every started host at once until it says Connected or `timeout` passes; a host that timed
    out fails with `words` of it (what its agent's service says), asked in this thread: ansible runs in the main
    thread alone. Returns the hosts that timed out."""

    stop = threading.Event()
    late: dict[str, str] = {}

    def one(t: Target) -> None:
        progress.started(t.name, tasks.WAIT)
        if (why := _poll(t, check, version, timeout, stop)) is None:
            progress.finished(t.name, tasks.WAIT, Outcome(ok=True))
        elif why == INTERRUPTED:
            progress.finished(t.name, tasks.WAIT, Outcome(ok=False, error=INTERRUPTED))
        else:
            late[t.name] = why

    if targets:
        _each(one, targets, stop.set)
    said = words([t for t in targets if t.name in late]) if late else {}
    for host, error in late.items():
        progress.finished(host, tasks.WAIT, Outcome(ok=False, error=error + said.get(host, "")))
    return [t for t in targets if t.name in late]


def _fate(version: str, probe: dict[str, Any], plan: dict[str, Any]) -> str:
    """What the message of a host whose new agent did not come up adds: what it goes back to, or that it cannot."""
    if probe.get("current") is None:
        return f"; the new version {version} did not come up; nothing to roll back to: no agent was installed before"
    if tasks.INSTALL.name not in plan and tasks.CONFIG.name in plan:  # a config-only redeploy: the same venv
        return "; the agent did not come up with its new config, so the config it had before is put back"
    return (f"; the new version {version} did not come up, so the previous version {probe['current_version']} "
            f"({probe['current']}) is put back")


def _late_words(engine: Engine, spec: AgentSpec, version: str, late: Sequence[Target],
                probes: dict[str, dict[str, Outcome]], work: dict[str, HostRun]) -> dict[str, str]:
    """What the failure of each host whose new agent did not connect adds: what its service says, and its `_fate`."""
    said = _service_words(engine, spec, late, probes)
    return {t.name: said.get(t.name, "") + _fate(version, probes[t.name][tasks.PROBE.name].data, work[t.name].args)
            for t in late}


class _Before:
    """The rollback's listener: logs its start; its end is logged once the restored agent connected, or did not."""

    def __init__(self, progress: _Progress):
        self.progress = progress

    def started(self, host: str, step: str) -> None:
        self.progress.started(host, step)

    def finished(self, host: str, step: str, outcome: Outcome) -> None:
        pass


def _roll_back(late: Sequence[Target], engine: Engine, spec: AgentSpec, probes: dict[str, dict[str, Outcome]],
               work: dict[str, HostRun], check: ConnectedCheck, timeout: float, progress: _Progress,
               stale: Stale) -> None:
    """Put back the install each `late` host had (its venv, its config, the stamp as probed), restart it and wait
    until it is Connected with its version again, in a session `stale` notes neither before the deploy's restart
    nor before this one (`check` is bound to it); a host without one keeps its failure (`_fate` says why)."""
    found = {t.name: probes[t.name][tasks.PROBE.name].data for t in late}
    runs = {t.name: HostRun(_connection(t), {tasks.ROLLBACK.name: args}) for t in late
            if (args := tasks.rollback_args(spec, found[t.name], work[t.name].args)) is not None}
    if not runs:
        return
    outcomes = engine.run(runs, [tasks.ROLLBACK], stale.noting(_Before(progress), tasks.ROLLBACK.name))
    restarted = [t for t in late if t.name in runs and outcomes[t.name].get(tasks.ROLLBACK.name, Outcome(False)).ok]
    stop = threading.Event()

    def one(t: Target) -> str | None:
        """Why its agent did not connect again (None: it did); an interrupted wait is logged at once, as Ctrl-C
        ends the deploy."""
        if (why := _poll(t, check, found[t.name]["current_version"], timeout, stop)) == INTERRUPTED:
            progress.finished(t.name, tasks.ROLLBACK.name, Outcome(
                ok=False, error=f"it was restored, but {INTERRUPTED} before it reported Connected"))
        return why

    whys = dict(zip([t.name for t in restarted], _each(one, restarted, stop.set) if restarted else [], strict=True))
    down = [t for t in restarted if whys[t.name] is not None]
    said = _service_words(engine, spec, down, probes) if down else {}
    for host in runs:
        o = outcomes[host].get(tasks.ROLLBACK.name) or Outcome(False, error="no result")
        why = whys.get(host, cause(o))
        outcome = Outcome(ok=True) if why is None else Outcome(
            ok=False, error=f"its rollback failed too: {why}{said.get(host, '')}")
        progress.finished(host, tasks.ROLLBACK.name, outcome)


def _clean_up(connected: Sequence[Target], engine: Engine, spec: AgentSpec, probes: dict[str, dict[str, Outcome]],
              progress: _Progress) -> None:
    """Drop the install the new agent of each `connected` host replaced (nothing on a fresh host)."""
    runs = {t.name: HostRun(_connection(t), {tasks.CLEAN_UP.name: args}) for t in connected
            if (args := tasks.clean_up_args(spec, probes[t.name][tasks.PROBE.name].data)) is not None}
    if runs:
        engine.run(runs, [tasks.CLEAN_UP], progress)


def deploy(agent: str, targets: Sequence[Target], coordinator_url: str, *, admin_token: str | None = None,
           api_url: str | None = None, deploy_log: bool = True, connected: ConnectedCheck | None = None,
           settings: DeploySettings | None = None, tokens: TokenSource | None = None,
           api_tokens: ApiTokenSource | None = None, holder: str | None = None,
           ca: Path | None = None) -> dict[str, Result]:
    """Deploy `agent` to `targets`; returns host name -> Result.

    `coordinator_url` goes into the agent's config; `api_url` (default: the same) is where the deployer
    posts the deploy log, asks whether the agent it (re)started is Connected (in another session than the one
    stopped: `deployer.sessions`), for targets without a `host_token` which token to write, and for an agent
    that serves an API of its own, that API's tokens. `connected`, `tokens` and `api_tokens` replace those
    questions (`connected` is asked as it is: no sessions). Each host is deployed
    holding its deploy lock at the coordinator (waiting up to `lock_wait` while someone else holds it);
    `holder` is who other deployers are told holds it (default: user@machine and pid). `ca` (default the
    `ca` setting) verifies the coordinator and goes to agents that reach it over https.
    Raises `errors.InvalidRequest` and `errors.BuildError` before touching any host.
    """
    if agent not in AGENTS:
        raise InvalidRequest(f"unknown agent {agent!r}; known: {', '.join(AGENTS)}", field="agent")
    if len({t.name for t in targets}) != len(targets):
        raise InvalidRequest("target names must be unique", field="targets")
    if not targets:
        return {}
    spec, settings = AGENTS[agent], settings or load_settings()
    api = api_url or coordinator_url
    ca = ca or settings.ca or pki.Layout().ca
    tls = _Tls(spec, coordinator_url, ca, Api(api, admin_token, ca=ca))
    bundle = wheelhouse.build(spec, settings.source_dir, settings.cache_dir, settings.index())
    dlog = DeployLog(api, admin_token, ca=ca) if deploy_log else None
    progress = _Progress(targets, dlog, spec.upload_path(bundle.digest))
    cp = settings.control_path_dir or settings.cache_dir / "cp"
    configs = _Configs(spec, bundle, coordinator_url, settings.refresh_index, tls,
                       tokens or coordinator_tokens(api, admin_token, ca),
                       api_tokens or coordinator_api_tokens(api, admin_token, ca), progress)
    keyed = _keyed(targets, progress)
    with sshkeys.known_hosts_file((t.address, t.port, t.ssh_host_keys) for t in keyed) as known_hosts:
        engine = Engine(tasks.program(remote_host), SshOptions(
            control_path_dir=str(cp), ssh_executable=settings.ssh_executable,
            connect_timeout=settings.connect_timeout, known_hosts=known_hosts, forks=settings.forks))
        locks = DeployLocks(api, admin_token, holder, wait=settings.lock_wait, ca=ca,
                            on_lost=lambda t: engine.stop(t.name, LOCK_LOST))
        try:
            probe = tasks.probe_args(spec, [*spec.packages, *settings.extra_packages])
            locked = _lock(keyed, locks, progress) if keyed else []
            probes = engine.run({t.name: HostRun(_connection(t), {tasks.PROBE.name: probe}) for t in locked},
                                [tasks.PROBE], progress) if locked else {}
            if connected is None:  # the coordinator's word, on an agent started since the restart
                coordinator = coordinator_check(api, admin_token, ca)
                stale = Stale(locked, coordinator.session)
                check = stale.bind(coordinator)
            else:
                stale, check = Stale(locked, None), connected
            if work := configs.work(_holding(locked, engine, progress), probes):
                engine.run(work, tasks.steps(spec, bundle), stale.noting(progress, tasks.SERVICE.name))
            started = [t for t in locked if progress.ran(t.name, tasks.SERVICE.name)]
            late = _wait(started, check, bundle.version, settings.connected_timeout, progress,
                         lambda late: _late_words(engine, spec, bundle.version, late, probes, work))
            _roll_back(late, engine, spec, probes, work, check, settings.connected_timeout, progress, stale)
            _clean_up([t for t in started if progress.results[t.name].ok], engine, spec, probes, progress)
        finally:
            locks.release()
            if dlog:
                dlog.close()
    return progress.finish(bundle.version)
