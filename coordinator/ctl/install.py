"""`hs-ctl install`: a control node (etcd, coordinator, console proxy) on this machine or another, through
the deployer.

The deployer's way (docs/deployer.md): one probe round trip, then only the steps whose result differs
from the node's stamp. An unchanged node costs the probe and nothing else: no file written, nothing
restarted. A fresh node gets the packages it lacks, the wheelhouse (the HostStack wheel and the
coordinator's dependencies, built on the controller), its files (etcd's and the coordinator's
configuration, the backup schedule), then its services in order, each waited for until it answers.

The coordinator's tokens (admin, reader, metrics) and the key that encrypts stored credentials are made
once, on the first install (a node installed without one gets it on its next), and read back from the node
by every later probe, so a second install keeps them. The console proxy is a host of the node's
coordinator: the first install registers it there once the coordinator answers, then probes again and
converges a second time with the proxy's uuid and token, which later probes read back.
The node's CA and certificates are kept the same way (coordinator/ctl/pki.py), renewed when a third of
their life is left, and so are etcd's passwords (coordinator/ctl/etcdauth.py): the services step turns on
etcd's auth right after etcd starts, before the coordinator does, once per node (its stamp).
One install, upgrade or restore of a node at a time: the steps that change it hold the node's lease (`_NodeRun`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from agentkit import pki, sshkeys
from agentkit.configfile import ConfigError
from coordinator.ctl import etcdauth, layout, lease, node, schedule
from coordinator.ctl import pki as node_pki
from coordinator.ctl.errors import CtlError
from coordinator.ctl.settings import SCHEDULE_KEYS, CtlSettings
from deployer import render, tasks, wheelhouse
from deployer.agentspec import AgentSpec
from deployer.causes import cause
from deployer.deploy import AGENTS, DeploySettings
from deployer.engine import Call, Connection, Engine, HostRun, SshOptions, Step, Upload
from deployer.model import Outcome
from deployer.remote import host as remote_host
from deployer.remote import node as remote_node
from deployer.wheelhouse import Bundle

log = logging.getLogger(__name__)
PROBE = Call("probe", "node_probe")
BACKUP = Call("backup", "backup")
SOURCE = Call("source", "source")
UPLOAD_SOURCE = "upload source"
FILES = Call("files", "files")
SERVICES = Call("services", "services")
REGISTER = Call("register console proxy", "register")
RELEASE = Call("release", "release_lease")
HOST = "node"
# The coordinator's venv: the HostStack wheel and what the coordinator (and the deployer it runs) import.
WHEELS = AgentSpec("coordinator", "HostStack control node", node.PACKAGES,
                   ("aiohttp", "pydantic", "aetcd", "protobuf", "cryptography", "dnslib", "ansible-core",
                    "uvloop"),
                   config_keys=())


class InstallFailed(CtlError):
    code = "install_failed"


@dataclass(frozen=True)
class Release:
    """What this controller installs: the wheelhouse, and the wheel build input for the node's own deployer
    (the source and the wheels of every agent it may deploy: it needs no index and no compiler)."""

    bundle: Bundle
    source: Path  # a tar of it
    source_digest: str

    @property
    def source_upload(self) -> str:
        return f"/var/tmp/hoststack-source-{self.source_digest[:16]}.tar"


@dataclass
class Installed:
    changed: list[str]  # the steps that changed the node
    admin_token: str
    reader_token: str
    metrics_token: str
    api_url: str
    version: str
    backup: str | None = None  # the report of the backup taken first (upgrades)
    ca: str | None = None  # the fingerprint of the CA the node's certificates are of


@dataclass
class _Listener:
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def started(self, host: str, step: str) -> None:
        log.info("%s: %s", host, step)

    def finished(self, host: str, step: str, outcome: Outcome) -> None:
        self.outcomes[step] = outcome


def new_secrets() -> dict[str, str]:
    return {"admin_token": secrets.token_urlsafe(32), "reader_token": secrets.token_urlsafe(32),
            "metrics_token": secrets.token_urlsafe(32), "secret_key": Fernet.generate_key().decode(),
            "etcd_password": secrets.token_urlsafe(32), "etcd_root_password": secrets.token_urlsafe(32)}


def probe_args() -> dict[str, Any]:
    return {"stamp": str(layout.STAMP), "packages": list(node.PACKAGES),
            "secrets": {k: [str(path), key] for k, (path, key) in node.SECRETS.items()},
            "services": [s.control() for s in node.SERVICES],
            "pki": {"dir": str(layout.PKI), "names": node_pki.names()},
            "ctl": {"config": str(layout.CTL_CONFIG), "keys": list(SCHEDULE_KEYS)}}


def with_ctl_settings(o: node.NodeOptions, probe: dict[str, Any], ctl: CtlSettings | None, where: str
                      ) -> node.NodeOptions:
    """`o` with hs-ctl's settings on the node that the backup timer's unit is written after: `ctl` (this machine's,
    as `hs-ctl backup-schedule` reads them), else those the probe read in the node's files, checked here as hs-ctl
    checks them (a bad one would fail every scheduled backup: it is named, and nothing is changed)."""
    if ctl is None:
        try:
            ctl = CtlSettings.of({k: (v, source) for k, (v, source) in probe.get("ctl", {}).items()})
        except ConfigError as e:
            raise InstallFailed(f"{where}: hs-ctl's settings: {e}") from None
    return dataclasses.replace(o, backup_dir=ctl.backup_dir, backup_copy_to=ctl.backup_copy_to)


def kept_secrets(probe: dict[str, Any]) -> dict[str, str]:
    """The node's secrets, new ones for those it has not got (the console proxy's come from registering it)."""
    kept = {k: v for k, v in probe["secrets"].items() if v}
    return {**kept, **{k: kept.get(k) or new for k, new in new_secrets().items()}}


def _service_digest(r: node.Rendered, name: str, bundle: Bundle) -> str:
    """What a service runs: its unit, the files it reads and, for those that run from the venv, the wheels."""
    parts = [r.units[name], *(r.file(p).content for p in r.inputs[name])]
    if name in node.ON_THE_VENV:
        parts.append(bundle.digest)
    return render.digest("\0".join(parts))


def plan(o: node.NodeOptions, release: Release, probe: dict[str, Any], secret: dict[str, str]
         ) -> dict[str, dict[str, Any]]:
    """Step name -> arguments for the steps the node needs; {} when it is as `o` describes."""
    stamp, systemd, bundle = probe["stamp"], probe["systemd"], release.bundle
    r = node.render_node(o, secret, systemd)
    out: dict[str, dict[str, Any]] = {}
    if probe["missing"]:
        out[tasks.PACKAGES.name] = {"packages": probe["missing"], "refresh": True}
    if stamp.get("wheels") != bundle.digest:
        out[tasks.UPLOAD] = {}
        out[tasks.INSTALL.name] = {"base": str(layout.VENV_BASE), "tar": WHEELS.upload_path(bundle.digest),
                                   "digest": bundle.digest, "stamp": str(layout.STAMP),
                                   "system_site_packages": WHEELS.system_site_packages}
    if stamp.get("source") != release.source_digest:
        out[UPLOAD_SOURCE] = {}
        out[SOURCE.name] = {"base": str(layout.VENV_BASE), "tar": release.source_upload,
                            "digest": release.source_digest, "stamp": str(layout.STAMP)}
    files = {"dirs": [d.__dict__ for d in r.dirs], "files": [f.__dict__ for f in r.files]}
    files_digest = render.digest(json.dumps(files, sort_keys=True))
    if stamp.get("files") != files_digest:
        out[FILES.name] = {**files, "digest": files_digest, "stamp": str(layout.STAMP),
                           "remove": _not_scheduled(o, systemd)}
    ready = node.ready_urls(o)
    auth = etcdauth.setup(node.etcd_url(o), node.tls(o), secret)
    auth_due = stamp.get(etcdauth.STAMP) != auth["digest"]
    services = []
    for s in (s for s in node.SERVICES if s.name in r.units):
        digest = _service_digest(r, s.name, bundle)
        restart = stamp.get(f"service {s.name}") != digest or not probe["running"][s.unit]
        services.append({**s.control(), "name": s.name, "unit_path": s.unit_path, "content": r.units[s.name],
                         "restart": restart, "digest": digest,  # etcd over TLS wants a client certificate
                         "ready": None if (s is node.ETCD and node.tls(o)) else ready[s.name],
                         "ready_ca": str(layout.PKI_FILES.ca) if node.tls(o) else None,
                         **({"etcd_auth": auth} if s is node.ETCD and auth_due else {})})
    # systemd reads a changed schedule (the timer's files) only at the timers' daemon-reload in this step, and a
    # timer no longer scheduled is stopped and disabled there before its files go (else it fires until a reboot)
    if auth_due or any(s["restart"] for s in services) or (systemd and FILES.name in out):
        out[SERVICES.name] = {"systemd": systemd, "services": services, "stamp": str(layout.STAMP),
                              "disable": list(node.ETCD.conflicts),
                              "timers": {"enable": r.timers} if r.timers else schedule.timer_off()}
    return out


def _not_scheduled(o: node.NodeOptions, systemd: bool) -> list[str]:
    """The backup schedule's files of the other kind of host, or all of them when backups are not scheduled
    (with systemd the timer's own go in the services step, once it stopped the timer: schedule.timer_off)."""
    if systemd:
        return [str(layout.CRON_FILE)]
    units = [schedule.SERVICE_PATH, schedule.TIMER_PATH]
    return units if o.backup_schedule else [*units, str(layout.CRON_FILE)]


def _steps(r: Release) -> list[Step]:
    return [tasks.PACKAGES, Upload(tasks.UPLOAD, str(r.bundle.tar), WHEELS.upload_path(r.bundle.digest)), tasks.INSTALL,
            Upload(UPLOAD_SOURCE, str(r.source), r.source_upload), SOURCE, FILES, SERVICES]


def _failed(listener: _Listener, where: str) -> None:
    for step, outcome in listener.outcomes.items():
        if not outcome.ok:
            raise InstallFailed(f"{where}: {step}: {cause(outcome)}")


def install(o: node.NodeOptions, connection: Connection, settings: DeploySettings,
            backup: dict[str, Any] | None = None, ssh_host_keys: tuple[str, ...] = (),
            ctl: CtlSettings | None = None) -> Installed:
    """Make the node at `connection` what `o` describes (one round trip when it already is). `backup`: the
    arguments of a backup the node's own hs-ctl takes first (an upgrade; refused where nothing is installed).
    ssh accepts only `ssh_host_keys` from a remote node (StrictHostKeyChecking, as every deploy). `ctl`: hs-ctl's
    settings on the node where this machine is it (else its probe reads them there)."""
    with sshkeys.known_hosts_file([(connection.address, connection.port, ssh_host_keys)]) as known:
        return _install(o, connection, settings, backup, known, ctl)


def _install(o: node.NodeOptions, connection: Connection, settings: DeploySettings, backup: dict[str, Any] | None,
             known_hosts: str, ctl: CtlSettings | None) -> Installed:
    index = settings.index()
    bundle = wheelhouse.build(WHEELS, settings.source_dir, settings.cache_dir, index)
    wheels = wheelhouse.offline_wheels(AGENTS.values(), settings.source_dir, settings.cache_dir, index)
    release = Release(bundle, *wheelhouse.source_tar(settings.source_dir, settings.cache_dir, wheels))
    cp = settings.control_path_dir or settings.cache_dir / "cp"
    engine = Engine(tasks.program(remote_host, remote_node), SshOptions(
        control_path_dir=str(cp), ssh_executable=settings.ssh_executable, connect_timeout=settings.connect_timeout,
        known_hosts=known_hosts, forks=1))
    holder = lease.holder("hs-ctl upgrade" if backup is not None else "hs-ctl install", connection.local)
    node_run = _NodeRun(engine, connection, "this machine" if connection.local else connection.address, holder)
    return _run(node_run, o, release, bundle, backup, ctl)


def _run(node_run: _NodeRun, o: node.NodeOptions, release: Release, bundle: Bundle, backup: dict[str, Any] | None,
         ctl: CtlSettings | None) -> Installed:
    """The install's runs on the node, the lease given back at the end where no step did, and after a failure."""
    try:
        done = _converge(node_run, o, release, bundle, backup, ctl)
    except Exception:  # not on Ctrl-C: the step it cut short may still run on the node, renewing the lease
        node_run.release()
        raise
    node_run.release()
    return done


def _converge(node_run: _NodeRun, o: node.NodeOptions, release: Release, bundle: Bundle,
              backup: dict[str, Any] | None, ctl: CtlSettings | None) -> Installed:
    probe = node_run.probe()
    o = with_ctl_settings(o, probe, ctl, node_run.where)
    report = None
    if backup is not None:
        if "wheels" not in probe["stamp"]:
            raise InstallFailed(f"{node_run.where}: no control node installed to upgrade; install it")
        report = node_run.call(BACKUP, backup, leased=True)["report"]
    secret = kept_secrets(probe)
    if not o.pki:  # not the operator's own: the node's, kept while they serve
        o = dataclasses.replace(o, pki=node_pki.node_pki(o.address, probe.get("pki", {})))
    registered = node.proxy_registered(secret)
    node_run.converge(plan(o, release, probe, secret), release, last=registered)
    if not registered:
        found = node_run.call(REGISTER, {"url": node.local_api(o), "admin_token": secret["admin_token"],
                                         "host": node.proxy_host(o),
                                         "ca": str(layout.PKI_FILES.ca) if node.tls(o) else None}, leased=True)
        secret.update(proxy_uuid=found["uuid"], proxy_token=found["token"])
        node_run.converge(plan(o, release, node_run.probe(), secret), release, last=True)
    changed = [s for s in node_run.listener.outcomes if s not in (PROBE.name, BACKUP.name, RELEASE.name)]
    ca = pki.fingerprint(pki.load_certs(dict(o.pki)[node_pki.CA_NAME].encode())[0])
    return Installed(changed, secret["admin_token"], secret["reader_token"], secret["metrics_token"], node.api_url(o),
                     bundle.version, report, ca)


@dataclass
class _NodeRun:
    """The engine's runs on the one node; a failed step ends the install with its cause. They hold the node's lease
    (deployer.remote.node) from the first step that changes the node to the last: the probe only checks it, so an
    install that finds nothing to do takes one round trip and leaves no lease behind."""

    engine: Engine
    connection: Connection
    where: str
    holder: dict[str, Any]
    listener: _Listener = field(default_factory=_Listener)
    stamp: dict[str, Any] = field(default_factory=dict)  # as the last probe read it
    held: bool = False  # a step took the lease (or tried to), and none released it yet

    def _lease(self, **how: bool) -> dict[str, Any]:
        return {"lock": str(layout.LOCK), "holder": self.holder, "ttl": layout.LEASE_TTL, "stamp": self.stamp,
                "stamp_path": str(layout.STAMP), **how}

    def probe(self) -> dict[str, Any]:
        found = self.call(PROBE, {**probe_args(), "lease": self._lease(check=True)})
        if stale := found.get("stale_lease"):
            log.warning("%s: taking over the node's lease of %s (expired, or its process is gone)", self.where,
                        remote_node.holder_text(stale))
        self.stamp = found["stamp"]
        return found

    def call(self, step: Call, args: dict[str, Any], leased: bool = False) -> dict[str, Any]:
        if leased:
            args = {**args, "lease": self._lease(first=not self.held)}
            self.held = True
        self.engine.run({HOST: HostRun(self.connection, {step.name: args})}, [step], self.listener)
        _failed(self.listener, self.where)
        data: dict[str, Any] = self.listener.outcomes[step.name].data
        return data

    def converge(self, work: dict[str, dict[str, Any]], release: Release, last: bool) -> None:
        """Run `work`'s steps, the last of them releasing the lease when nothing follows them (`last`)."""
        if not work:
            return
        calls = [s.name for s in _steps(release) if isinstance(s, Call) and s.name in work]
        for i, name in enumerate(calls):
            work[name] = {**work[name], "lease": self._lease(first=i == 0 and not self.held,
                                                             release=last and i == len(calls) - 1)}
        self.held = True
        self.engine.run({HOST: HostRun(self.connection, work)}, _steps(release), self.listener)
        _failed(self.listener, self.where)
        self.held = not last

    def release(self) -> None:
        """The lease given back where no step did (nothing to converge after a backup or a registration; a failure
        outside the node's steps): else it would bind until it expires. A failure here is only logged."""
        if not self.held:
            return
        self.held, done = False, _Listener()
        args = {"lock": str(layout.LOCK), "holder": self.holder}
        try:
            self.engine.run({HOST: HostRun(self.connection, {RELEASE.name: args})}, [RELEASE], done)
        except Exception:  # noqa: BLE001 - the install's own outcome, or failure, is what the operator sees
            log.debug("releasing the lease", exc_info=True)
        if not done.outcomes.get(RELEASE.name, Outcome(ok=False)).ok:
            log.warning("%s: could not give back the node's lease (%s): it binds until it expires", self.where,
                        layout.LOCK)
