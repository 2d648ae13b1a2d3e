"""The control node's steps of the program a deploy runs on a host (`hs-ctl install` and upgrade ship it
with `deployer.remote.host`, whose kit it uses; hs-ctl itself calls a few on its own node): the node's probe,
its files, services, timers and etcd's auth, a backup before an upgrade, and registrations at the node's own
coordinator. Stdlib-only, as `host`.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import tarfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from deployer.remote import host


def source(a: dict[str, Any]) -> dict[str, Any]:
    """Unpack the uploaded wheel build input to `<base>/source-<digest>`, checked as `install` checks a wheelhouse
    (what a node's deployer builds agents from), and make it `<base>/source`."""
    base, digest = Path(a["base"]), a["digest"]
    into = base / f"source-{digest[:20]}"
    if not (into / ".complete").exists():
        shutil.rmtree(into, ignore_errors=True)
        with host.space(base), tarfile.open(a["tar"]) as tar:  # our own archive: files at relative paths, in its order
            host.unpack_verified(
                tar, f"source {a['tar']}", digest, into, tar.getmembers(),
                lambda n: bool(n) and not n.startswith("/") and not {"", ".", ".."} & set(n.split("/")))
        (into / ".complete").touch()
    tmp = base / ".source.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(into.name)
    os.replace(tmp, base / "source")
    for old in base.glob("source-*"):
        if old != into:
            shutil.rmtree(old, ignore_errors=True)
    Path(a["tar"]).unlink(missing_ok=True)
    host.stamp(a["stamp"], "source", digest)
    return {"source": str(into)}


def node_probe(a: dict[str, Any]) -> dict[str, Any]:
    """A control node's probe: stamp, missing packages, systemd, which services run, the kept secrets (and
    the PKI files it has, when asked: the controller keeps those that still serve; and hs-ctl's settings the
    backup timer is written after, when asked)."""
    out = host.probe_host(a)
    out["running"] = {s["unit"]: host.running(s, out["systemd"]) for s in a["services"]}
    out["secrets"] = {k: host.config_value(path, key) for k, (path, key) in a["secrets"].items()}
    if "pki" in a:
        d = Path(a["pki"]["dir"])
        out["pki"] = {n: (d / n).read_text() for n in a["pki"]["names"] if (d / n).is_file()}
    if "ctl" in a:
        out["ctl"] = ctl_settings(Path(a["ctl"]["config"]), a["ctl"]["keys"])
    return out


def ctl_settings(config: Path, keys: list[str]) -> dict[str, list[Any]]:
    """`keys` of hs-ctl's settings here as its scheduled run reads them (agentkit.configfile: `config`, then the
    `*.toml` of `<its stem>.d` by name, each over those before; a unit sets no HS_CTL_* variable): key -> [its
    value, the file that set it]; the controller checks them (CtlSettings.of)."""
    drop_ins = config.with_suffix(".d")
    names = sorted(n for n in os.listdir(drop_ins) if n.endswith(".toml") and not n.startswith(".")) \
        if drop_ins.is_dir() else []
    found: dict[str, list[Any]] = {}
    for file in [*([config] if config.exists() else []), *(drop_ins / n for n in names)]:
        try:
            data = tomllib.loads(file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise host.Fail(f"hs-ctl's settings {file}: {e}") from None
        # as JSON carries it back (a TOML date as its text: refused there as any value that is no path)
        found.update({k: [json.loads(json.dumps(data[k], default=str)), str(file)] for k in keys if k in data})
    return found


def _owned(path: Path, mode: int, owner: str | None, group: str | None) -> None:
    os.chmod(path, mode)
    if owner:
        shutil.chown(path, user=owner)
    if group:
        shutil.chown(path, group=group)


def files(a: dict[str, Any]) -> dict[str, Any]:
    """Make the directories and write the files whose content changed (each replaced whole)."""
    for d in a["dirs"]:
        path = Path(d["path"])
        with host.space(path.parent):
            path.mkdir(parents=True, exist_ok=True)
        _owned(path, d["mode"], d.get("owner"), d.get("group"))
    for f in a["files"]:
        path = Path(f["path"])
        host.write(path, f["content"], f["mode"])
        _owned(path, f["mode"], None, f.get("group"))
    _remove(a.get("remove", []))
    if a.get("stamp"):
        host.stamp(a["stamp"], "files", a["digest"])
    return {}


def _remove(paths: list[str]) -> None:
    for gone in paths:
        Path(gone).unlink(missing_ok=True)


def wait_ready(url: str, timeout: float, ca: str | None = None) -> None:
    """Until `url` answers 200 (a service's health endpoint on this host; https verified with `ca`)."""
    deadline, last = time.monotonic() + timeout, ""
    context = ssl.create_default_context(cafile=ca) if ca else None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as r:  # noqa: S310 - our own loopback URL
                if r.status == 200:
                    return
        except (OSError, ValueError) as e:
            last = str(e)
        time.sleep(0.2)
    raise host.Fail(f"{url} did not answer within {timeout:g} s ({last or 'no answer'})")


def timers(a: dict[str, Any]) -> None:
    """systemd only: `enable` these timers (and start them), `disable` those (and stop them), then `remove`
    their unit files and reload, so that systemd forgets them."""
    host.systemctl("daemon-reload")
    if a.get("enable"):
        host.systemctl("enable", "--now", "--quiet", *a["enable"])
    if a.get("disable"):
        host.sh(["systemctl", "disable", "--now", "--quiet", *a["disable"]])  # absent units are no error
    if a.get("remove"):
        _remove(a["remove"])
        host.systemctl("daemon-reload")


def backup(a: dict[str, Any]) -> dict[str, Any]:
    """Run the node's own `hs-ctl backup` (before an upgrade replaces it); its report line."""
    p = host.sh([a["hs_ctl"], "backup", "--file-name", a["name"], "--keep-amount", str(a["keep"])], timeout=3600)
    if p.returncode:
        cause = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"hs-ctl backup exited {p.returncode}"
        raise host.Fail(cause)
    return {"report": p.stdout.strip()}


def _api(url: str, token: str, body: dict[str, Any] | None = None, ca: str | None = None) -> Any:
    """A call to the node's own coordinator (GET, or POST of `body`; https verified with `ca`): its answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=ca) if ca else None
    with urllib.request.urlopen(req, timeout=30, context=context) as r:  # noqa: S310 - the node's own URL
        return json.loads(r.read())


def register(a: dict[str, Any]) -> dict[str, Any]:
    """Register a host at the node's own coordinator: its uuid and agent token. A host of that name, left
    by an install that stopped before it wrote the token down, gets a new token instead."""
    url, token, record, ca = a["url"], a["admin_token"], a["host"], a.get("ca")
    try:
        found = _api(f"{url}/v1/hosts", token, record, ca)
        return {"uuid": found["uuid"], "token": found["token"]}
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise host.Fail(f"registering {record['name']} at {url}: {e.code} {e.read()[:300]!r}") from None
    uuid = next(h["uuid"] for h in _api(f"{url}/v1/hosts", token, ca=ca)["hosts"] if h["name"] == record["name"])
    return {"uuid": uuid, "token": _api(f"{url}/v1/hosts/{uuid}/token", token, {}, ca)["token"]}


def _etcdctl_env(a: dict[str, Any]) -> dict[str, str]:
    """etcdctl as etcd's root user: the password in the environment, never in argv."""
    return {**host.BASE_ENV, "ETCDCTL_API": "3", "ETCDCTL_ENDPOINTS": a["endpoint"], "ETCDCTL_DIAL_TIMEOUT": "3s",
            "ETCDCTL_USER": "root", "ETCDCTL_PASSWORD": a["root_password"],
            **{f"ETCDCTL_{k.upper()}": a[k] for k in ("cacert", "cert", "key") if a.get(k)}}


def _etcdctl(a: dict[str, Any], *args: str, password: str | None = None, exists_ok: bool = False) -> bool:
    """One etcdctl command (a new `password` on stdin); False when it refused only because what it was to
    add `exists_ok`."""
    new = [] if password is None else ["--interactive=false"]
    p = host.sh(["etcdctl", *args, *new], _etcdctl_env(a), timeout=60,
                stdin=None if password is None else f"{password}\n")
    if p.returncode == 0:
        return True
    cause = (p.stderr.strip().splitlines() or [f"exited {p.returncode}"])[-1]
    if exists_ok and "already exists" in cause:
        return False
    raise host.Fail(f"etcdctl {' '.join(args[:2])}: {cause}")


def _wait_etcd(a: dict[str, Any]) -> None:
    timeout = a.get("timeout", 60)
    deadline = time.monotonic() + timeout
    while (p := host.sh(["etcdctl", "endpoint", "health"], _etcdctl_env(a), timeout=30)).returncode:
        if "authentication failed" in p.stderr:  # auth is on, and root's password is not the one kept
            raise host.Fail(f"etcd at {a['endpoint']} refuses the root password the node keeps ({a['root_file']})")
        if time.monotonic() > deadline:
            raise host.Fail(f"etcd at {a['endpoint']} did not answer within {timeout:g} s")
        time.sleep(0.2)


def etcd_auth(a: dict[str, Any]) -> None:
    """etcd's auth on: its root user, a role that may read and write `prefix` only, the coordinator's user
    with that role and the given password, then auth enabled; stamped. What an interrupted run made already
    is kept (while auth is off, etcd takes any root password)."""
    _wait_etcd(a)
    _etcdctl(a, "user", "add", "root", password=a["root_password"], exists_ok=True)
    _etcdctl(a, "role", "add", a["role"], exists_ok=True)
    _etcdctl(a, "role", "grant-permission", a["role"], "--prefix=true", "readwrite", a["prefix"])
    if not _etcdctl(a, "user", "add", a["user"], password=a["password"], exists_ok=True):
        _etcdctl(a, "user", "passwd", a["user"], password=a["password"])
    _etcdctl(a, "user", "grant-role", a["user"], a["role"])
    _etcdctl(a, "auth", "enable")
    host.stamp(a["stamp"], "etcd auth", a["digest"])


def services(a: dict[str, Any]) -> dict[str, Any]:
    """A node's services in order: write each unit or supervisor script, (re)start those marked, wait until
    each answers its health URL; then the timers. Units of others (a distribution's etcd) are disabled."""
    systemd = a["systemd"]
    for s in a["services"]:
        host.put_service(s, systemd)
    if systemd:
        host.systemctl("daemon-reload")
        if a.get("disable"):
            host.sh(["systemctl", "disable", "--now", "--quiet", *a["disable"]])
        host.systemctl("enable", "--quiet", *(s["unit"] for s in a["services"]))
    for s in a["services"]:
        if s["restart"]:
            host.restart(s, systemd)
        else:
            host.start(s, systemd)
        if s.get("ready"):
            wait_ready(s["ready"], a.get("timeout", 60), s.get("ready_ca"))
        if s.get("etcd_auth"):  # before the services that log in to etcd start
            etcd_auth(s["etcd_auth"])
        host.stamp(a["stamp"], f"service {s['name']}", s["digest"])
    if systemd and a.get("timers"):
        timers(a["timers"])
    return {}


FUNCTIONS = {f.__name__: f for f in (node_probe, host.packages, host.install, source, files, backup, services,
                                     register)}


def main() -> None:
    host.dispatch(FUNCTIONS)
