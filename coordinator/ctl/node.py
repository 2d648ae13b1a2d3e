"""A control node as data: its services, files and directories, rendered from a few choices.

Pure: `render` turns `NodeOptions` and the node's secrets into the exact text of every file, so the
installer compares digests with the node's stamp before it sends anything (render apart from apply).
etcd runs for production: its own user and data directory, periodic auto-compaction, a raised
backend quota, v2 off, user/password auth on (etcdauth.py: the coordinator's user may use HostStack's
prefix only; etcd's root user is for hs-ctl). With the node's certificates (coordinator/ctl/pki.py:
what install makes, or an operator's) every hop is TLS: etcd's listeners with client certificates, the
coordinator's etcd client, its API (which also issues hosts their certificates with the CA key, when
the node holds it), the URL agents are given and the console proxy (which asks the coordinator for its
certificate); without them (tests only) every hop is plain HTTP on loopback. The console proxy runs
from the coordinator's venv; it is a host of the node's own coordinator, so it is rendered once that
coordinator registered it (its uuid and token are secrets the install keeps, as the admin token). The
coordinator's reader and metrics tokens are kept the same way; the proxy's /metrics takes the metrics token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.ctl import etcdauth, layout, pki, schedule
from deployer import consoleproxy, render, wheelhouse
from deployer.service import SANDBOX, Service

ETCD = Service(
    "etcd", "HostStack etcd, the coordinator's store", ("/usr/bin/etcd", "--config-file", str(layout.ETCD_CONFIG)),
    user=layout.ETCD_USER, notify=True, conflicts=("etcd.service",),
    sandbox=(*SANDBOX, ("StateDirectory", "hoststack/etcd"), ("StateDirectoryMode", "0700")))
COORDINATOR = Service(
    "coordinator", "HostStack coordinator", (str(layout.VENV_BASE / "current" / "bin" / "hs-coordinator"),),
    after=("network-online.target", ETCD.unit),
    sandbox=(*SANDBOX, ("StateDirectory", "hoststack/coordinator"), ("CacheDirectory", "hoststack/deployer")))
CONSOLEPROXY = Service(
    "consoleproxy", consoleproxy.SPEC.description, (str(layout.VENV_BASE / "current" / "bin" / "consoleproxy"),),
    after=("network-online.target", COORDINATOR.unit), sandbox=consoleproxy.SPEC.sandbox)
SERVICES = (ETCD, COORDINATOR, CONSOLEPROXY)  # in start order
ON_THE_VENV = (COORDINATOR.name, CONSOLEPROXY.name)  # restarted when the wheels change
PACKAGES = ("etcd-server", "etcd-client", "python3", "python3-venv", "openssh-client",
            *(p for p in consoleproxy.SPEC.packages if p not in ("python3", "python3-venv")))
# Kept from the node's files once there: name -> (file, its key).
SECRETS = {"admin_token": (layout.COORDINATOR_CONFIG, "admin_token"),
           "reader_token": (layout.COORDINATOR_CONFIG, "reader_token"),
           "metrics_token": (layout.COORDINATOR_CONFIG, "metrics_token"),
           "secret_key": (layout.COORDINATOR_CONFIG, "secret_key"),
           "proxy_uuid": (layout.CONSOLEPROXY_CONFIG, "uuid"), "proxy_token": (layout.CONSOLEPROXY_CONFIG, "token"),
           "etcd_password": (layout.COORDINATOR_CONFIG, "etcd_password"),
           "etcd_root_password": (layout.ETCD_ROOT_CONFIG, "etcd_password")}
GiB = 1 << 30


@dataclass(frozen=True)
class NodeOptions:
    address: str  # how agents and operators reach this node
    name: str = "hoststack"  # the etcd member's name
    api_listen: str = "0.0.0.0"  # noqa: S104 - the API is for agents and operators on other machines
    api_port: int = layout.API_PORT
    agent_url: str | None = None  # the coordinator URL written into agent configs; default https://<address>:port
    pki: tuple[tuple[str, str], ...] = ()  # (file name, PEM) of the certificates laid out in layout.PKI
    file_roots: tuple[str, ...] = ()  # where disk, ISO and kernel paths VMs name may be (else the coordinator's)
    compaction_retention: str = "1h"
    quota_bytes: int = 8 * GiB
    backup_schedule: str | None = schedule.DEFAULT  # cron syntax; None: no scheduled backups
    backup_keep: int = schedule.DEFAULT_KEEP
    # hs-ctl's settings on the node (install reads them: its probe, or this machine's CtlSettings), which the
    # backup timer's unit must let it write, as `hs-ctl backup-schedule` writes it
    backup_dir: Path = layout.BACKUP_DIR
    backup_copy_to: Path | None = None


@dataclass(frozen=True)
class File:
    path: str
    content: str
    mode: int = 0o644
    group: str | None = None  # root's file, readable by this group


@dataclass(frozen=True)
class Dir:
    path: str
    mode: int = 0o755
    owner: str | None = None
    group: str | None = None


@dataclass
class Rendered:
    dirs: list[Dir]
    files: list[File]
    units: dict[str, str]  # service name -> its unit (systemd) or supervisor script, in start order
    inputs: dict[str, list[str]] = field(default_factory=dict)  # service name -> files a change restarts it for
    timers: list[str] = field(default_factory=list)  # systemd timers to enable

    def file(self, path: str | Path) -> File:
        return next(f for f in self.files if f.path == str(path))


def tls(o: NodeOptions) -> bool:
    """With certificates, etcd's listeners and its clients use TLS."""
    return bool(o.pki)


def scheme(o: NodeOptions) -> str:
    return "https" if tls(o) else "http"


def _pair(role: str) -> tuple[str, str]:
    return str(layout.PKI_FILES.cert(role)), str(layout.PKI_FILES.key(role))


def etcd_config(o: NodeOptions) -> dict[str, object]:
    """etcd's --config-file (etcd 3.4 keys)."""
    client = etcd_url(o)
    peer = f"{scheme(o)}://127.0.0.1:{layout.ETCD_PEER_PORT}"
    cfg: dict[str, object] = {
        "name": o.name, "data-dir": str(layout.ETCD_DATA),
        "listen-client-urls": client, "advertise-client-urls": client,
        "listen-peer-urls": peer, "initial-advertise-peer-urls": peer,
        "initial-cluster": f"{o.name}={peer}", "initial-cluster-state": "new",
        "initial-cluster-token": f"hoststack-{o.name}",
        "auto-compaction-mode": "periodic", "auto-compaction-retention": o.compaction_retention,
        "quota-backend-bytes": o.quota_bytes, "enable-v2": False, "logger": "zap", "log-outputs": ["stderr"],
    }
    if tls(o):
        for section, role in (("client-transport-security", "etcd-server"), ("peer-transport-security", "etcd-peer")):
            cert, key = _pair(role)
            cfg[section] = {"cert-file": cert, "key-file": key, "trusted-ca-file": str(layout.PKI_FILES.ca),
                            "client-cert-auth": True}
    return cfg


def etcd_url(o: NodeOptions) -> str:
    """etcd's client listener (loopback: only the node's own coordinator and hs-ctl talk to it)."""
    return f"{scheme(o)}://127.0.0.1:{layout.ETCD_CLIENT_PORT}"


def api_url(o: NodeOptions) -> str:
    """Where agents and operators reach the coordinator."""
    return o.agent_url or f"{scheme(o)}://{url_host(o.address)}:{o.api_port}"


def _tls(o: NodeOptions, role: str | None) -> dict[str, render.Value]:
    """A process's `[tls]`: its certificate (`role`'s; none: it asks the coordinator for one) and the CA."""
    if not tls(o):
        return {"plain_http": True}
    cert, key = _pair(role) if role else (None, None)
    return {"ca": str(layout.PKI_FILES.ca), **({"cert": cert, "key": key} if cert and key else {})}


def coordinator_config(o: NodeOptions, secrets: dict[str, str]) -> dict[str, render.Value | dict[str, render.Value]]:
    values: dict[str, render.Value | dict[str, render.Value]] = {
        "etcd": etcd_url(o) if tls(o) else f"127.0.0.1:{layout.ETCD_CLIENT_PORT}",
        **etcdauth.coordinator_settings(secrets),
        "listen": o.api_listen, "port": o.api_port, "admin_token": secrets["admin_token"],
        "reader_token": secrets["reader_token"], "metrics_token": secrets["metrics_token"],
        "secret_key": secrets["secret_key"], "deployer_config": str(layout.DEPLOYER_CONFIG),
        "coordinator_url_for_agents": api_url(o), "tls": _tls(o, "coordinator"),
    }
    if o.file_roots:
        values["file_roots"] = ",".join(o.file_roots)
    if tls(o):
        cert, key = _pair("etcd-client")
        values.update(etcd_ca=str(layout.PKI_FILES.ca), etcd_cert=cert, etcd_key=key)
        if pki.CA_KEY_NAME in dict(o.pki):
            values["ca_key"] = str(layout.PKI_FILES.ca_key)
    return values


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def local_api(o: NodeOptions) -> str:
    """The coordinator's API as the node's own programs reach it."""
    return f"{scheme(o)}://127.0.0.1:{o.api_port}"


def proxy_health(o: NodeOptions) -> str:
    """Over TLS at the node's address: the certificate the proxy asked for names that one only."""
    return f"{scheme(o)}://{url_host(o.address) if tls(o) else '127.0.0.1'}:{layout.CONSOLE_PORT}/health"


def proxy_registered(secrets: dict[str, str]) -> bool:
    return bool(secrets.get("proxy_uuid") and secrets.get("proxy_token"))


def proxy_host(o: NodeOptions) -> dict[str, str]:
    """The console proxy's host record at the node's coordinator (browsers reach it at the node's address)."""
    return {"name": f"{o.name}-consoleproxy", "address": o.address, "kind": "consoleproxy"}


def consoleproxy_config(o: NodeOptions, secrets: dict[str, str]) -> dict[str, render.Value | dict[str, render.Value]]:
    """The proxy verifies the coordinator with the CA and asks it for its certificate (the node's address); its
    /metrics takes the coordinator's metrics token, as a deployed proxy's does (deployer/consoleproxy.py)."""
    return {"coordinator_url": local_api(o), "uuid": secrets["proxy_uuid"], "token": secrets["proxy_token"],
            "metrics_token": secrets["metrics_token"], "port": layout.CONSOLE_PORT, "tls": _tls(o, None)}


def deployer_config() -> dict[str, render.Value]:
    """The deployer the coordinator runs (automatic agent deploys): its state where its sandbox may write, the
    CA it verifies the coordinator with and gives agents (SSH host keys come with each host's record), and
    the wheels install shipped as all it builds from (a node may reach no index and has no compiler)."""
    return {"source_dir": str(layout.SOURCE), "cache_dir": str(layout.DEPLOYER_CACHE), "ca": str(layout.PKI_FILES.ca),
            "find_links": [str(layout.SOURCE / wheelhouse.OFFLINE)], "no_index": True}


def render_node(o: NodeOptions, secrets: dict[str, str], systemd: bool) -> Rendered:
    """Every directory, file and unit of a control node (units as systemd or the supervisor loop wants them)."""
    dirs = [Dir(str(layout.ETC)), Dir(str(layout.ETCD_DIR), 0o700, layout.ETCD_USER, layout.ETCD_USER),
            Dir(str(layout.COORDINATOR_STATE), 0o700), Dir(str(layout.DEPLOYER_CACHE), 0o700),
            Dir(str(o.backup_dir), 0o700)]  # the copy's directory never: hs-ctl backup refuses it unmounted
    files = [
        File(str(layout.ETCD_CONFIG), json.dumps(etcd_config(o), indent=2, sort_keys=True) + "\n", 0o640,
             layout.ETCD_USER),
        File(str(layout.COORDINATOR_CONFIG), render.config_toml(coordinator_config(o, secrets)), 0o600),
        File(str(layout.ETCD_ROOT_CONFIG), render.config_toml(etcdauth.root_settings(secrets)), 0o600),
        File(str(layout.DEPLOYER_CONFIG), render.config_toml(deployer_config())),
    ]
    if o.pki:
        dirs.append(Dir(str(layout.PKI), 0o750, group=layout.ETCD_USER))
        files += [_pki_file(name, pem) for name, pem in o.pki]
    timers: list[str] = []
    if o.backup_schedule:
        job = schedule.Job(o.backup_schedule, o.backup_keep, o.backup_dir, o.backup_copy_to)
        if systemd:
            files += [File(path, text) for path, text in schedule.systemd_units(job).items()]
            timers.append(schedule.TIMER)
        else:
            files.append(File(str(layout.CRON_FILE), schedule.cron_entry(job)))
    inputs = {ETCD.name: [str(layout.ETCD_CONFIG)], COORDINATOR.name: [str(layout.COORDINATOR_CONFIG)]}
    if proxy_registered(secrets):
        files.append(File(str(layout.CONSOLEPROXY_CONFIG), render.config_toml(consoleproxy_config(o, secrets)),
                          0o600))
        inputs[CONSOLEPROXY.name] = [str(layout.CONSOLEPROXY_CONFIG)]
    units = {s.name: render.systemd_unit(s) if systemd else render.supervisor_script(s) for s in SERVICES
             if s.name in inputs}
    return Rendered(dirs, files, units, inputs, timers)


def ready_urls(o: NodeOptions) -> dict[str, str]:
    """Where each service answers once it serves (asked on the node itself; over TLS verified by the CA)."""
    return {ETCD.name: f"{scheme(o)}://127.0.0.1:{layout.ETCD_CLIENT_PORT}/health",
            COORDINATOR.name: f"{local_api(o)}/health", CONSOLEPROXY.name: proxy_health(o)}


def _pki_file(name: str, pem: str) -> File:
    """Certificates for all; etcd's keys for the etcd user too; the CA's and the coordinator's for root only."""
    if not name.endswith("-key.pem"):
        return File(str(layout.PKI / name), pem, 0o644)
    if name.startswith("etcd-"):
        return File(str(layout.PKI / name), pem, 0o640, layout.ETCD_USER)
    return File(str(layout.PKI / name), pem, 0o600)
