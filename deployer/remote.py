"""What a deploy runs on the host: stdlib-only Python, shipped as source with every call.

The engine runs `python3 -c <this file> <function>` with the call's JSON arguments on stdin (so
secrets never show in `ps`); the function's return value comes back as one JSON line on stdout. A
failure exits 2 with ONE line on stderr naming the cause ("apt: package x not found", "disk full:
/opt/hoststack/kvmagent"). Hosts do not have HostStack installed (that is the point), so nothing here
imports it and `_sh` is this side's only way to run a command. Every path arrives in the arguments,
which keeps the functions testable against a temporary directory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
APT_ENV = {**BASE_ENV, "DEBIAN_FRONTEND": "noninteractive"}
NOT_FOUND = re.compile(r"Unable to locate package (\S+)|Package '?([^' ]+)'? has no installation candidate")


class Fail(Exception):
    """The one-line cause the operator sees."""


def _sh(argv: list[str], env: dict[str, str] | None = None, timeout: float = 900,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv (never a shell), `stdin` its input (a secret that must not show in `ps`); the caller reads
    returncode."""
    return subprocess.run(argv, capture_output=True, text=True, errors="replace", env=env or BASE_ENV,
                          timeout=timeout, check=False, input=stdin)


def _disk_full(path: str | Path, text: str) -> None:
    if "No space left on device" in text or "enough free space" in text:
        raise Fail(f"disk full: {path}")


@contextlib.contextmanager
def _space(path: str | Path) -> Iterator[None]:
    """Name the directory when a write runs out of space."""
    try:
        yield
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise Fail(f"disk full: {path}") from e
        raise


def _write(path: Path, content: str, mode: int) -> None:
    """Replace a file atomically: readers see the old or the new content, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with _space(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            os.fchmod(f.fileno(), mode)
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _stamp(path: str, key: str, value: str) -> None:
    """Record that component `key` of the deploy is now `value` (read by the next probe)."""
    p = Path(path)
    stamp = json.loads(p.read_text()) if p.exists() else {}
    stamp[key] = value
    _write(p, json.dumps(stamp, sort_keys=True) + "\n", 0o644)


def _missing(packages: list[str]) -> list[str]:
    """One dpkg-query for all packages: those not fully installed."""
    if not packages:
        return []
    p = _sh(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages])
    installed = {line.split()[0].split(":")[0] for line in p.stdout.splitlines() if line.endswith(" installed")}
    return [pkg for pkg in packages if pkg not in installed]


def _supervisor_pid(pidfile: str, script: str) -> int | None:
    """The pid of our supervisor if it is alive (and really ours, not a reused pid)."""
    try:
        pid = int(Path(pidfile).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if script.encode() in cmdline else None


def _running(a: dict[str, Any], systemd: bool) -> bool:
    if systemd:
        return _sh(["systemctl", "is-active", "--quiet", a["unit"]]).returncode == 0
    return _supervisor_pid(a["pidfile"], a["supervisor"]) is not None


def _config_value(path: str, key: str) -> str | None:
    """A string setting of the config a deploy wrote (`key = "JSON string"` lines), None if absent."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, sep, value = line.partition(" = ")
        if sep and name == key:
            with contextlib.suppress(ValueError):
                v = json.loads(value)
                return v if isinstance(v, str) else None
    return None


def _probe_host(a: dict[str, Any]) -> dict[str, Any]:
    """What every probe answers: what was deployed (the stamp), the packages missing, whether systemd runs."""
    p = Path(a["stamp"])
    return {
        "stamp": json.loads(p.read_text()) if p.exists() else {},
        "missing": _missing(a["packages"]),
        "systemd": os.path.isdir("/run/systemd/system"),
    }


def _renewed_token(path: str | None, configured: str) -> str | None:
    """The token the agent renewed and presents instead of `configured`: agentkit.identity keeps it in `path`
    with the digest of the configured token it replaced (a config with another token wins over it)."""
    try:
        kept = json.loads(Path(path).read_text()) if path else None
    except (OSError, ValueError):
        return None
    if isinstance(kept, dict) and kept.get("replaces") == hashlib.sha256(configured.encode()).hexdigest():
        token = kept.get("token")
        return token if isinstance(token, str) else None
    return None


def probe(a: dict[str, Any]) -> dict[str, Any]:
    """Everything the controller needs to plan, in one round trip; Fail when it runs as another user than root, or
    the host's python3 is not the one the wheels are built for (`python`).

    `token` is the host token the agent presents (the one it renewed, else its config's), `config_token` the
    one in its config: the controller keeps the config as it is while the coordinator still accepts the
    first, so a redeploy does not rewrite the config (and restart the agent).
    """
    if os.geteuid() != 0:  # the config unread, the coordinator would be asked for a token, voiding the agent's
        raise Fail(f"the SSH user is not root (uid {os.geteuid()}): a deploy installs packages and services, and "
                   "reads the agent's token")
    found = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if found != a["python"]:  # its venv could not take the wheels (nor run what an earlier deploy installed)
        raise Fail(f"python3 on the host is {found}; the agent's wheels are built for Python {a['python']} "
                   "(the deployer's)")
    out = _probe_host(a)
    out["running"] = _running(a, out["systemd"])
    if a.get("token_key"):
        configured = out["config_token"] = _config_value(a["config"], a["token_key"])
        out["token"] = configured and (_renewed_token(a.get("token_file"), configured) or configured)
    return out


def packages(a: dict[str, Any]) -> dict[str, Any]:
    """Install the missing packages; refresh the index once only if one has no candidate."""
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *a["packages"]]
    p = _sh(argv, APT_ENV)
    if p.returncode and a["refresh"] and NOT_FOUND.search(p.stderr):
        _sh(["apt-get", "update", "-q"], APT_ENV)
        p = _sh(argv, APT_ENV)
    if p.returncode == 0:
        return {"installed": a["packages"]}
    _disk_full("/var/cache/apt/archives", p.stderr)
    unknown = [x or y for x, y in NOT_FOUND.findall(p.stderr)]
    if unknown:
        raise Fail(f"apt: package {', '.join(unknown)} not found")
    errors = [line[3:] for line in p.stderr.splitlines() if line.startswith("E: ")]
    raise Fail(f"apt: {errors[-1] if errors else p.stderr.strip()[-200:]}")


def wheels_digest(members: Iterator[tuple[str, Iterator[bytes]]]) -> str:
    """The digest that names a wheelhouse (or a source tar): over each member's name and SHA-256, in the order
    given (the controller computes it when it builds the tar, the host again before it uses what it unpacked)."""
    h = hashlib.sha256()
    for name, chunks in members:
        one = hashlib.sha256()
        for chunk in chunks:
            one.update(chunk)
        h.update(name.encode() + b"\0" + one.digest())
    return h.hexdigest()


def _chunks(f: Any) -> Iterator[bytes]:
    while chunk := f.read(1 << 20):
        yield chunk


def _copied(src: Any, dest: Path) -> Iterator[bytes]:
    """`src`'s chunks, each written to `dest` as it is read."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for chunk in _chunks(src):
            out.write(chunk)
            yield chunk


def _unpack_verified(tar: tarfile.TarFile, what: str, digest: str, into: Path, members: list[tarfile.TarInfo],
                     fits: Callable[[str], bool]) -> None:
    """Unpack `members` of an uploaded tar (regular files whose names fit) into `into`, hashing the very bytes
    written, and Fail unless their digest is the one the controller built. One read: the tar lies in /var/tmp,
    where whoever made the file before the upload owns it (ansible's copy keeps a destination's owner) and could
    rewrite it after a separate check."""
    odd = [m.name for m in members if not m.isfile() or not fits(m.name)]
    if odd:
        raise Fail(f"{what}: unexpected member {odd[0]!r}; not installed")
    into.mkdir(parents=True)
    found = wheels_digest((m.name, _copied(tar.extractfile(m), into / m.name)) for m in members)
    if found != digest:
        shutil.rmtree(into)
        raise Fail(f"{what}: its digest {found[:16]} is not the {digest[:16]} the deployer built; not installed")


def install(a: dict[str, Any]) -> dict[str, Any]:
    """Check the uploaded wheelhouse's digest, unpack it into a new venv and make that `current` (the old one
    keeps running). The venv sees the host's site-packages only where the spec says so; a venv of the same
    digest is reused as it is, as the digest covers our wheel, which holds the spec."""
    base, digest = Path(a["base"]), a["digest"]
    venv, wheels = base / f"venv-{digest}", base / f"wheels-{digest}"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(wheels, ignore_errors=True)
        with _space(base), tarfile.open(a["tar"]) as tar:
            _unpack_verified(tar, f"wheelhouse {a['tar']}", digest, wheels, sorted(tar.getmembers(),
                             key=lambda m: m.name), lambda n: "/" not in n and n.endswith(".whl"))
        system = ["--system-site-packages"] if a["system_site_packages"] else []
        p = _sh(["/usr/bin/python3", "-m", "venv", *system, "--without-pip", str(venv)])
        if p.returncode:
            _disk_full(base, p.stderr)
            raise Fail(f"venv: {p.stderr.strip()[-200:]}")
        whls = sorted(str(w) for w in wheels.glob("*.whl"))
        pip = next(w for w in whls if Path(w).name.startswith("pip-"))
        p = _sh([str(venv / "bin/python"), f"{pip}/pip", "install", "-q", "--no-index", "--no-deps",
                 "--disable-pip-version-check", *whls])
        if p.returncode:
            _disk_full(base, p.stderr + p.stdout)
            raise Fail(f"pip: {(p.stderr or p.stdout).strip().splitlines()[-1]}")
        (venv / ".complete").touch()
    link = base / "current"
    tmp = base / ".current.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(venv.name)
    os.replace(tmp, link)
    shutil.rmtree(wheels, ignore_errors=True)
    Path(a["tar"]).unlink(missing_ok=True)
    _stamp(a["stamp"], "wheels", digest)
    return {"venv": str(venv)}


def source(a: dict[str, Any]) -> dict[str, Any]:
    """Unpack the uploaded wheel build input to `<base>/source-<digest>`, checked as `install` checks a wheelhouse
    (what a node's deployer builds agents from), and make it `<base>/source`."""
    base, digest = Path(a["base"]), a["digest"]
    into = base / f"source-{digest[:20]}"
    if not (into / ".complete").exists():
        shutil.rmtree(into, ignore_errors=True)
        with _space(base), tarfile.open(a["tar"]) as tar:  # our own archive: files at relative paths, in its order
            _unpack_verified(tar, f"source {a['tar']}", digest, into, tar.getmembers(),
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
    _stamp(a["stamp"], "source", digest)
    return {"source": str(into)}


def _tail(path: str, lines: int) -> list[str]:
    """The last `lines` lines of a file, read from its end (a supervised agent's log is never rotated)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            return f.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def status(a: dict[str, Any]) -> dict[str, Any]:
    """The service's state and its last `lines` lines of output: why an agent a deploy started did not connect."""
    n = a["lines"]
    if a["systemd"]:
        shown = _sh(["systemctl", "show", "-p", "ActiveState,SubState,ExecMainStatus", a["unit"]]).stdout
        p = {k: v for k, _, v in (line.partition("=") for line in shown.splitlines())}
        state = " ".join(dict.fromkeys((p.get("ActiveState", "?"), p.get("SubState", "?"))))
        state += f" (exit {p['ExecMainStatus']})" if p.get("ExecMainStatus", "0") != "0" else ""
        lines = _sh(["journalctl", "-u", a["unit"], "-n", str(n), "--no-pager", "-o", "cat"]).stdout.splitlines()
    else:
        running = _supervisor_pid(a["pidfile"], a["supervisor"]) is not None
        state, lines = f"supervisor {'running' if running else 'not running'}", _tail(a["log"], n)
    return {"state": state[:200], "lines": [line[:500] for line in lines[-n:]]}


def config(a: dict[str, Any]) -> dict[str, Any]:
    """Write the agent's config (it holds the host token: mode 0600) and the files that go with it (the CA,
    the agent's certificate and key when they are renewed, which are stamped with their expiry)."""
    for path, content, mode in a.get("files", []):
        _write(Path(path), content, mode)
    _write(Path(a["path"]), a["content"], 0o600)
    if a.get("tls_expires"):
        _stamp(a["stamp"], "tls", json.dumps([time.time(), a["tls_expires"]]))
    _stamp(a["stamp"], "config", a["digest"])
    return {}


def _stop_supervised(pidfile: str, script: str, timeout: float = 10) -> None:
    pid = _supervisor_pid(pidfile, script)
    if pid is None:
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _supervisor_pid(pidfile, script) == pid:
        time.sleep(0.05)
    if _supervisor_pid(pidfile, script) == pid:
        os.killpg(pid, signal.SIGKILL)


def _start_supervised(a: dict[str, Any]) -> int:
    """Start the supervisor loop detached from this ssh session (own session, no inherited fds); Fail where
    its script is not there (nothing installed it: sh would start, fail at once, and leave a pid)."""
    if not Path(a["supervisor"]).is_file():
        raise Fail(f"{a['supervisor']} is not there: the service is not installed here")
    Path(a["log"]).parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen(["/bin/sh", a["supervisor"]], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True, env=BASE_ENV)
    _write(Path(a["pidfile"]), f"{p.pid}\n", 0o644)
    return p.pid


def _systemctl(*args: str) -> None:
    p = _sh(["systemctl", *args])
    if p.returncode:
        raise Fail(f"systemctl {' '.join(args)}: {p.stderr.strip()[-200:]}")


def _prune(base: Path) -> None:
    """Remove venvs other than `current` once the new one runs."""
    keep = os.readlink(base / "current") if (base / "current").is_symlink() else None
    for d in base.glob("venv-*"):
        if d.name != keep:
            shutil.rmtree(d, ignore_errors=True)


def _put_service(a: dict[str, Any], systemd: bool) -> None:
    """Write the unit (systemd) or the supervisor script."""
    if systemd:
        _write(Path(a["unit_path"]), a["content"], 0o644)
    else:
        _write(Path(a["supervisor"]), a["content"], 0o755)


def running(a: dict[str, Any], systemd: bool) -> bool:
    """Whether the service `a` (unit, pidfile, supervisor) runs."""
    return _running(a, systemd)


def restart(a: dict[str, Any], systemd: bool) -> int | None:
    """(Re)start the service; the supervisor's pid where there is no systemd."""
    if systemd:
        _systemctl("restart", a["unit"])
        return None
    _stop_supervised(a["pidfile"], a["supervisor"])
    return _start_supervised(a)


def start(a: dict[str, Any], systemd: bool) -> int | None:
    """Start the service unless it runs."""
    if _running(a, systemd):
        return None
    if systemd:
        _systemctl("start", a["unit"])
        return None
    return _start_supervised(a)


def stop(a: dict[str, Any], systemd: bool) -> None:
    if systemd:
        _systemctl("stop", a["unit"])
    else:
        _stop_supervised(a["pidfile"], a["supervisor"])


def service(a: dict[str, Any]) -> dict[str, Any]:
    """Install the systemd unit or the supervisor script, (re)start the agent, drop old venvs."""
    systemd = a["systemd"]
    _put_service(a, systemd)
    if systemd:
        _systemctl("daemon-reload")
        _systemctl("enable", "--quiet", a["unit"])
    pid = restart(a, systemd)
    _prune(Path(a["base"]))
    _stamp(a["stamp"], "service", a["digest"])
    return {"pid": pid}


def node_probe(a: dict[str, Any]) -> dict[str, Any]:
    """A control node's probe: stamp, missing packages, systemd, which services run, the kept secrets (and
    the PKI files it has, when asked: the controller keeps those that still serve)."""
    out = _probe_host(a)
    out["running"] = {s["unit"]: _running(s, out["systemd"]) for s in a["services"]}
    out["secrets"] = {k: _config_value(path, key) for k, (path, key) in a["secrets"].items()}
    if "pki" in a:
        d = Path(a["pki"]["dir"])
        out["pki"] = {n: (d / n).read_text() for n in a["pki"]["names"] if (d / n).is_file()}
    return out


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
        with _space(path.parent):
            path.mkdir(parents=True, exist_ok=True)
        _owned(path, d["mode"], d.get("owner"), d.get("group"))
    for f in a["files"]:
        path = Path(f["path"])
        _write(path, f["content"], f["mode"])
        _owned(path, f["mode"], None, f.get("group"))
    _remove(a.get("remove", []))
    if a.get("stamp"):
        _stamp(a["stamp"], "files", a["digest"])
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
    raise Fail(f"{url} did not answer within {timeout:g} s ({last or 'no answer'})")


def timers(a: dict[str, Any]) -> None:
    """systemd only: `enable` these timers (and start them), `disable` those (and stop them), then `remove`
    their unit files and reload, so that systemd forgets them."""
    _systemctl("daemon-reload")
    if a.get("enable"):
        _systemctl("enable", "--now", "--quiet", *a["enable"])
    if a.get("disable"):
        _sh(["systemctl", "disable", "--now", "--quiet", *a["disable"]])  # absent units are no error
    if a.get("remove"):
        _remove(a["remove"])
        _systemctl("daemon-reload")


def backup(a: dict[str, Any]) -> dict[str, Any]:
    """Run the node's own `hs-ctl backup` (before an upgrade replaces it); its report line."""
    p = _sh([a["hs_ctl"], "backup", "--file-name", a["name"], "--keep-amount", str(a["keep"])], timeout=3600)
    if p.returncode:
        raise Fail(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"hs-ctl backup exited {p.returncode}")
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
    url, token, host, ca = a["url"], a["admin_token"], a["host"], a.get("ca")
    try:
        found = _api(f"{url}/v1/hosts", token, host, ca)
        return {"uuid": found["uuid"], "token": found["token"]}
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise Fail(f"registering {host['name']} at {url}: {e.code} {e.read()[:300]!r}") from None
    uuid = next(h["uuid"] for h in _api(f"{url}/v1/hosts", token, ca=ca)["hosts"] if h["name"] == host["name"])
    return {"uuid": uuid, "token": _api(f"{url}/v1/hosts/{uuid}/token", token, {}, ca)["token"]}


def _etcdctl_env(a: dict[str, Any]) -> dict[str, str]:
    """etcdctl as etcd's root user: the password in the environment, never in argv."""
    return {**BASE_ENV, "ETCDCTL_API": "3", "ETCDCTL_ENDPOINTS": a["endpoint"], "ETCDCTL_DIAL_TIMEOUT": "3s",
            "ETCDCTL_USER": "root", "ETCDCTL_PASSWORD": a["root_password"],
            **{f"ETCDCTL_{k.upper()}": a[k] for k in ("cacert", "cert", "key") if a.get(k)}}


def _etcdctl(a: dict[str, Any], *args: str, password: str | None = None, exists_ok: bool = False) -> bool:
    """One etcdctl command (a new `password` on stdin); False when it refused only because what it was to
    add `exists_ok`."""
    new = [] if password is None else ["--interactive=false"]
    p = _sh(["etcdctl", *args, *new], _etcdctl_env(a), timeout=60, stdin=None if password is None else f"{password}\n")
    if p.returncode == 0:
        return True
    cause = (p.stderr.strip().splitlines() or [f"exited {p.returncode}"])[-1]
    if exists_ok and "already exists" in cause:
        return False
    raise Fail(f"etcdctl {' '.join(args[:2])}: {cause}")


def _wait_etcd(a: dict[str, Any]) -> None:
    timeout = a.get("timeout", 60)
    deadline = time.monotonic() + timeout
    while (p := _sh(["etcdctl", "endpoint", "health"], _etcdctl_env(a), timeout=30)).returncode:
        if "authentication failed" in p.stderr:  # auth is on, and root's password is not the one kept
            raise Fail(f"etcd at {a['endpoint']} refuses the root password the node keeps ({a['root_file']})")
        if time.monotonic() > deadline:
            raise Fail(f"etcd at {a['endpoint']} did not answer within {timeout:g} s")
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
    _stamp(a["stamp"], "etcd auth", a["digest"])


def services(a: dict[str, Any]) -> dict[str, Any]:
    """A node's services in order: write each unit or supervisor script, (re)start those marked, wait until
    each answers its health URL; then the timers. Units of others (a distribution's etcd) are disabled."""
    systemd = a["systemd"]
    for s in a["services"]:
        _put_service(s, systemd)
    if systemd:
        _systemctl("daemon-reload")
        if a.get("disable"):
            _sh(["systemctl", "disable", "--now", "--quiet", *a["disable"]])
        _systemctl("enable", "--quiet", *(s["unit"] for s in a["services"]))
    for s in a["services"]:
        if s["restart"]:
            restart(s, systemd)
        else:
            start(s, systemd)
        if s.get("ready"):
            wait_ready(s["ready"], a.get("timeout", 60), s.get("ready_ca"))
        if s.get("etcd_auth"):  # before the services that log in to etcd start
            etcd_auth(s["etcd_auth"])
        _stamp(a["stamp"], f"service {s['name']}", s["digest"])
    if systemd and a.get("timers"):
        timers(a["timers"])
    return {}


FUNCTIONS = {f.__name__: f for f in (probe, packages, install, config, service, status, node_probe, source, files,
                                     backup, services, register)}


def main() -> None:
    fn = FUNCTIONS[sys.argv[1]]
    args = json.loads(sys.stdin.read())
    try:
        out = fn(args)
    except Fail as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"disk full: {e.filename}" if e.errno == errno.ENOSPC else f"{fn.__name__}: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
