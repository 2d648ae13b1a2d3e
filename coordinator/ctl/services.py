"""The node's own services, run on the node: start, stop, restart, and where each answers.

Through systemd where it is PID 1, else through the supervisor loops install left (the same functions
the deployer runs on hosts: `deployer.remote`). Where each service answers is read from the files the
install wrote (etcd's configuration, the coordinator's settings), so a changed port is followed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agentkit import config
from coordinator.ctl import layout, node
from coordinator.ctl.errors import ServiceFailed
from coordinator.ctl.settings import CtlSettings
from coordinator.etcd.store import Store
from coordinator.settings import CoordinatorSettings
from deployer.remote import host as remote_host
from deployer.remote import node as remote_node
from deployer.service import Service

BY_NAME = {s.name: s for s in node.SERVICES}


def systemd() -> bool:
    return os.path.isdir("/run/systemd/system")


def pick(names: list[str]) -> list[Service]:
    """The named services in start order (all of them for none)."""
    unknown = set(names) - BY_NAME.keys()
    if unknown:
        raise ServiceFailed(f"no service {', '.join(map(repr, sorted(unknown)))}; the node runs {', '.join(BY_NAME)}")
    return [s for s in node.SERVICES if not names or s.name in names]


def coordinator_settings(s: CtlSettings) -> CoordinatorSettings:
    """The coordinator's settings as the node's coordinator loads them (file, then HS_COORDINATOR_*)."""
    try:
        return config.load(CoordinatorSettings, "coordinator", s.coordinator_config)
    except config.ConfigError as e:
        where = s.coordinator_config
        missing = "" if where.exists() else f"{where} is not there (not a control node?); "
        raise ServiceFailed(f"the coordinator's settings: {missing}{e}") from None


def store(s: CtlSettings) -> Store:
    """etcd as the node's coordinator reaches it (endpoints, TLS, auth from its settings); not connected yet."""
    return Store(s.etcd())


def etcd_config(path: Path, *required: str) -> dict[str, Any]:
    """etcd's configuration file as install wrote it (JSON), with the `required` keys; ServiceFailed naming the
    file and what is wrong with it (an operator may have edited it)."""
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ServiceFailed(f"etcd's configuration {path}: {e}") from None
    if not isinstance(cfg, dict):
        raise ServiceFailed(f"etcd's configuration {path}: not a JSON object")
    if missing := [k for k in required if k not in cfg]:
        raise ServiceFailed(f"etcd's configuration {path}: no {', '.join(missing)}")
    return cfg


def etcd_client_url(s: CtlSettings) -> str:
    return str(etcd_config(s.etcd_config, "advertise-client-urls")["advertise-client-urls"]).split(",")[0]


def health_url(s: CtlSettings, svc: Service) -> str:
    if svc is node.ETCD:
        return etcd_client_url(s) + "/health"
    cs = coordinator_settings(s)  # the node's console proxy serves as its coordinator does (TLS or not)
    if svc is node.CONSOLEPROXY:
        return f"{cs.tls.scheme}://127.0.0.1:{layout.CONSOLE_PORT}/health"
    return f"{cs.tls.scheme}://127.0.0.1:{cs.port}/health"


def wait_ready(s: CtlSettings, svc: Service) -> None:
    """Until the service answers its health URL (etcd over TLS wants a client certificate: not asked there;
    the others over TLS are verified with the coordinator's CA)."""
    url = health_url(s, svc)
    if svc in (node.ETCD, node.CONSOLEPROXY) and url.startswith("https:"):
        return  # etcd wants a client certificate; the proxy's names the node's address only
    tls = coordinator_settings(s).tls
    remote_node.wait_ready(url, s.ready_timeout, None if tls.plain_http else str(tls.ca_file()))


def start(s: CtlSettings, names: list[str], restart: bool = False) -> None:
    """Start (or restart) in order, each waited for until it answers before the next."""
    sd = systemd()
    for svc in pick(names):
        try:
            if restart:
                remote_host.restart(svc.control(), sd)
            else:
                remote_host.start(svc.control(), sd)
            wait_ready(s, svc)
        except remote_host.Fail as e:
            raise ServiceFailed(f"{'restart' if restart else 'start'} {svc.name}: {e}") from None


def stop(names: list[str]) -> None:
    """Stop in reverse order (the coordinator before its etcd)."""
    sd = systemd()
    for svc in reversed(pick(names)):
        try:
            remote_host.stop(svc.control(), sd)
        except remote_host.Fail as e:
            raise ServiceFailed(f"stop {svc.name}: {e}") from None


def running(svc: Service) -> bool:
    return remote_host.running(svc.control(), systemd())
