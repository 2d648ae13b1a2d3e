"""A deploy's steps as data, and the plan that picks the few a host needs.

The first step, `probe`, costs one round trip and changes nothing: it returns the host's stamp (the
digests of the wheelhouse, config and service it has), the packages it lacks (one dpkg-query for
all), whether systemd is PID 1 and whether the agent runs. `plan` compares that with what would be
installed and returns only the steps that make a difference, with their arguments; an unchanged host
gets an empty plan and is done after the probe.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import ModuleType
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from deployer import render, wheelhouse
from deployer.agentspec import AgentSpec
from deployer.engine import Call, Step, Upload
from deployer.wheelhouse import Bundle


class _Reply(BaseModel):
    """What a host answers to a step (a `deployer.remote` function's return value), as the controller takes it: exactly
    these fields, of these types and sizes. A host may be hostile; one that answers otherwise fails the step."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ProbeReply(_Reply):
    stamp: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]] = Field(max_length=32)
    missing: list[Annotated[str, Field(max_length=256)]] = Field(max_length=256)
    systemd: bool
    running: bool
    token: str | None = Field(None, max_length=512)  # the coordinator takes no longer one (TokenRequest.keep)
    config_token: str | None = Field(None, max_length=512)
    current: str | None = Field(None, max_length=200)  # the venv installed: what a failed upgrade rolls back to
    current_version: str | None = Field(None, max_length=100)


class PackagesReply(_Reply):
    installed: list[Annotated[str, Field(max_length=256)]] = Field(max_length=256)


class InstallReply(_Reply):
    venv: str = Field(max_length=4096)


STATUS_LINES = 10  # of the agent's own output that a deploy whose agent did not connect shows


class ServiceReply(_Reply):
    pid: int | None


class RollbackReply(_Reply):
    pid: int | None


class StatusReply(_Reply):
    state: str = Field(max_length=200)
    lines: list[Annotated[str, Field(max_length=500)]] = Field(max_length=STATUS_LINES)


PROBE = Call("probe", "probe", ProbeReply)
PACKAGES = Call("packages", "packages", PackagesReply)
UPLOAD = "upload"
INSTALL = Call("install", "install", InstallReply)
CONFIG = Call("config", "config", _Reply)
SERVICE = Call("service", "service", ServiceReply)
WAIT = "wait connected"  # runs on the controller, logged like the others
# after a wait that timed out, not logged: what the agent's service says goes into the wait's message
STATUS = Call("agent status", "status", StatusReply)
# after a wait that timed out on a host that had an install: put that back; after one that passed: drop it
ROLLBACK = Call("rollback", "rollback", RollbackReply)
CLEAN_UP = Call("clean up", "clean_up", _Reply)
TOKEN = "host token"  # on the controller, between probe and plan; logged only when it fails
API_TOKEN = "agent API token"  # on the controller, after the host token, for agents serving an API of their own
LOCK = "deploy lock"  # on the controller, before the probe; logged only when it fails
HOST_KEY = "ssh host key"  # on the controller, first: a host without recorded keys is not connected to
CERTIFICATE = "certificate"  # on the controller, after the probe, for agents that serve TLS and never dial in

DESCRIPTIONS = {
    PROBE.name: "compare the host with what would be installed",
    PACKAGES.name: "install missing Debian packages",
    UPLOAD: "copy the wheelhouse",
    INSTALL.name: "install the agent into a new venv",
    CONFIG.name: "write the agent config",
    SERVICE.name: "install the service and (re)start the agent",
    WAIT: "wait until the agent reports Connected",
    ROLLBACK.name: "put back the venv and config the agent had, restart it and wait until it reports Connected",
    CLEAN_UP.name: "remove the venv and config the new agent replaced",
    TOKEN: "keep the host's token or get a new one from the coordinator",
    API_TOKEN: "get the tokens of the agent's own API from the coordinator",
    LOCK: "take the host's deploy lock at the coordinator",
    HOST_KEY: "know the host's SSH host keys recorded at the coordinator",
    CERTIFICATE: "get the agent's TLS certificate from the coordinator",
}


# Makes each shipped module from its source under its real name (a package as an empty module), then runs the last
# one's main(). Compiled with the module's path in the tree, so that a bug's traceback on the host names its file
# and line.
_BOOTSTRAP = """\
import sys, types
for name, source in {modules!r}:
    module = sys.modules[name] = types.ModuleType(name)
    if source is not None:
        module.__file__ = name.replace(".", "/") + ".py"
        exec(compile(source, module.__file__, "exec"), module.__dict__)
sys.modules[{entry!r}].main()
"""


def program(*modules: ModuleType) -> str:
    """The program the Calls run on hosts: `modules` of `deployer.remote`, each after those it imports, the last
    one's `main` answering the call. It is one argv element, which Linux takes up to 128 KiB."""
    names = [m.__name__ for m in modules]
    packages = dict.fromkeys(n.rsplit(".", i)[0] for n in names for i in range(n.count("."), 0, -1))
    shipped = [*((p, None) for p in packages), *((m.__name__, inspect.getsource(m)) for m in modules)]
    return _BOOTSTRAP.format(modules=shipped, entry=names[-1])


def steps(spec: AgentSpec, bundle: Bundle) -> list[Step]:
    """Every step after the probe, in order; a host runs those its plan names."""
    return [PACKAGES, Upload(UPLOAD, str(bundle.tar), spec.upload_path(bundle.digest)), INSTALL, CONFIG, SERVICE]


def probe_args(spec: AgentSpec, packages: list[str]) -> dict[str, Any]:
    return {"stamp": spec.stamp, "packages": packages, "unit": spec.unit, "pidfile": spec.pidfile,
            "supervisor": spec.supervisor, "config": spec.config_path, "token_key": spec.token_key,
            "token_file": spec.token_file, "python": wheelhouse.PYTHON, "base": spec.base}


def status_args(spec: AgentSpec, systemd: bool) -> dict[str, Any]:
    return {**spec.service.control(), "systemd": systemd, "lines": STATUS_LINES}


def rollback_args(spec: AgentSpec, probe: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any] | None:
    """What puts a host back as its probe found it, after a deploy (`plan`) whose agent did not come up; None on a
    host that had no install to go back to."""
    if probe.get("current") is None:
        return None
    return {**spec.service.control(), "systemd": probe["systemd"], "base": spec.base, "previous": probe["current"],
            "config": spec.config_path if CONFIG.name in plan else None, "stamp": spec.stamp,
            "recorded": probe["stamp"]}


def clean_up_args(spec: AgentSpec, probe: dict[str, Any]) -> dict[str, Any] | None:
    """What drops the install a deploy replaced once its agent is Connected; None where there was none."""
    return {"base": spec.base, "config": spec.config_path} if probe.get("current") is not None else None


File = tuple[str, str, int]  # (path on the host, content, mode)


@dataclass(frozen=True)
class Desired:
    """What a host should end up with (config differs per host: it holds the host's token). `files` go with
    the config (the CA the agent trusts); `certificate` (its files and expiry) only when the agent's own
    TLS certificate is due (render.certificate_due)."""

    bundle: Bundle
    config: str
    refresh_index: bool = True
    files: tuple[File, ...] = ()
    certificate: tuple[tuple[File, ...], float] | None = None


def plan(spec: AgentSpec, want: Desired, probe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Step name -> arguments for the steps this host needs; {} when it is up to date."""
    stamp = probe["stamp"]
    out: dict[str, dict[str, Any]] = {}
    if probe["missing"]:
        out[PACKAGES.name] = {"packages": probe["missing"], "refresh": want.refresh_index}
    if stamp.get("wheels") != want.bundle.digest:
        out[UPLOAD] = {}
        out[INSTALL.name] = {"base": spec.base, "tar": spec.upload_path(want.bundle.digest),
                             "digest": want.bundle.digest, "stamp": spec.stamp,
                             "system_site_packages": spec.system_site_packages}
    config_digest = render.digest(want.config + "".join(content for _, content, _ in want.files))
    if stamp.get("config") != config_digest or want.certificate:
        files, expires = want.certificate or ((), None)
        out[CONFIG.name] = {"path": spec.config_path, "content": want.config, "digest": config_digest,
                            "stamp": spec.stamp, "files": [list(f) for f in (*want.files, *files)],
                            "tls_expires": expires}
    systemd = probe["systemd"]
    content = render.systemd_unit(spec.service) if systemd else render.supervisor_script(spec.service)
    service_digest = render.digest(content)
    if out.keys() - {PACKAGES.name} or stamp.get("service") != service_digest or not probe["running"]:
        out[SERVICE.name] = {"systemd": systemd, "content": content, "digest": service_digest, "stamp": spec.stamp,
                             "base": spec.base, "unit": spec.unit, "unit_path": spec.unit_path,
                             "supervisor": spec.supervisor, "pidfile": spec.pidfile, "log": spec.log,
                             "previous": probe.get("current")}
    return out
