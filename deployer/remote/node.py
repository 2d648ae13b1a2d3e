"""The control node's steps of the program a deploy runs on a host (`hs-ctl install` and upgrade ship it
with `deployer.remote.host`, whose kit it uses; hs-ctl itself calls a few on its own node): the node's probe,
its files, services, timers and etcd's auth, a backup before an upgrade, registrations at the node's own
coordinator, and the lease around them that keeps two installs (or an install and a restore) of the node apart.
Stdlib-only, as `host`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import ssl
import tarfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
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


# The node's lease: one `hs-ctl install`, upgrade or restore at a time. Each step of an install is a process of
# its own, so no lock of one process can span them: the lease is a file (`lock`) naming its holder and when it
# expires, read and written only under an flock of its directory. The probe checks it; the first step that changes
# the node takes it, provided the deployer's stamp is still what that probe read (else another install changed the
# node meanwhile); every later step renews it (a thread, while the step runs); the last one removes it.
# A lease expired, or held by a process of this node that is gone (a restore, an install without --host), is free.


def process_start(pid: int) -> str | None:
    """When process `pid` started (/proc/<pid>/stat's 22nd field), None when there is none: with its pid it names
    one process, not a later one given the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


@contextlib.contextmanager
def _guarded(lock: Path) -> Iterator[dict[str, Any] | None]:
    """The lease as it is (None: nobody's) while no other process reads or writes it."""
    with host.space(lock.parent):
        lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            held = json.loads(lock.read_text())
        except FileNotFoundError:
            held = None
        except ValueError:  # not one of ours (we replace it whole): nobody's
            held = None
        yield held if isinstance(held, dict) else None
    finally:
        os.close(fd)


def live(held: dict[str, Any], now: float) -> bool:
    """Whether a lease still binds: not expired, and its holder, where it is a process of this node, still runs."""
    if held.get("expires") is not None and held["expires"] <= now:
        return False
    return not held.get("local") or process_start(held.get("pid", 0)) == held.get("start")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def holder_text(held: dict[str, Any]) -> str:
    """Who holds the lease, in the words of a refusal."""
    until = "until its process ends" if held.get("expires") is None else f"expires {_when(held['expires'])}"
    return f"{held.get('what', '?')} from {held.get('host', '?')} (pid {held.get('pid', '?')}) since " \
        f"{_when(held.get('since', 0))}, {until}"


def _busy(lock: Path, held: dict[str, Any]) -> host.Fail:
    return host.Fail(f"{holder_text(held)} holds this node ({lock}); nothing was changed: run this again once it ended")


def _stamp(path: str) -> dict[str, Any]:
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else {}


def check_lease(lease: dict[str, Any]) -> dict[str, Any] | None:
    """Fail when another live holder has the lease; the expired one (or one whose process is gone) found, which the
    next step takes over."""
    lock = Path(lease["lock"])
    if not lock.parent.is_dir():  # nothing installed: the probe makes nothing
        return None
    with _guarded(lock) as held:
        if held is None or held.get("id") == lease["holder"]["id"]:
            return None
        if live(held, time.time()):
            raise _busy(lock, held)
        return held


def take_lease(lease: dict[str, Any]) -> None:
    """Take the lease (`first`: the install's first step that changes the node; a restore) or renew it. The first
    takes a free one only while the stamp is what its probe read (`stamp`, unless None): otherwise another install
    ran meanwhile, and this one would undo it with what it planned before. A later one renews its own only."""
    lock, me, now = Path(lease["lock"]), lease["holder"], time.time()
    with _guarded(lock) as held:
        mine = held is not None and held.get("id") == me["id"]
        if not mine and not lease.get("first"):
            who = f": {holder_text(held)} holds it" if held else ""
            raise host.Fail(f"this run's lease on the node ({lock}) lapsed{who}; the steps before this one were done: "
                            "run it again")
        if not mine and held is not None and live(held, now):
            raise _busy(lock, held)
        if not mine and lease.get("stamp") is not None and _stamp(lease["stamp_path"]) != lease["stamp"]:
            raise host.Fail("another install changed the node since this one probed it; nothing was changed: run "
                            "this again")
        ttl = lease.get("ttl")
        record = {**me, "since": held["since"] if mine and held else now, "expires": None if ttl is None else now + ttl}
        host.write(lock, json.dumps(record, sort_keys=True) + "\n", 0o644)


def release_lease(lease: dict[str, Any]) -> dict[str, Any]:
    """Remove the lease if it is still this holder's."""
    lock = Path(lease["lock"])
    with _guarded(lock) as held:
        if held is not None and held.get("id") == lease["holder"]["id"]:
            lock.unlink(missing_ok=True)
    return {}


@contextlib.contextmanager
def _renewed(lease: dict[str, Any]) -> Iterator[None]:
    """The lease renewed every quarter of its life while the block runs (a package install or a backup may take
    longer than the lease lasts)."""
    if lease.get("ttl") is None:
        yield
        return
    stop, renewing = threading.Event(), {**lease, "first": False}

    def renew() -> None:
        while not stop.wait(lease["ttl"] / 4):
            with contextlib.suppress(host.Fail, OSError):  # lost: the next step says so
                take_lease(renewing)
    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def leased(fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """`fn` under the lease its arguments carry (`lease`): checked only (`check`: a probe, which reports an expired
    one), else taken or renewed first and held while it runs, released after it when it is the last step
    (`release`) or failed (the install ends at its first failed step)."""
    def run(a: dict[str, Any]) -> Any:
        lease = a.pop("lease", None)
        if lease is None:
            return fn(a)
        if lease.get("check"):
            stale = check_lease(lease)
            out = fn(a)
            return {**out, "stale_lease": stale} if stale else out
        take_lease(lease)
        try:
            with _renewed(lease):
                out = fn(a)
        except BaseException:
            release_lease(lease)
            raise
        if lease.get("release"):
            release_lease(lease)
        return out
    run.__name__ = fn.__name__
    return run


FUNCTIONS = {f.__name__: leased(f) for f in (node_probe, host.packages, host.install, source, files, backup, services,
                                             register, release_lease)}


def main() -> None:
    host.dispatch(FUNCTIONS)
