"""What every host a deploy reaches runs, and an agent's steps (probe, packages, install, config, service,
status): the kit `node` builds on too (`sh`, atomic `write`, the `stamp`, a service's control). The contract of
the program these are shipped in: `deployer.remote`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
APT_ENV = {**BASE_ENV, "DEBIAN_FRONTEND": "noninteractive"}
# held while a step runs (`one_step_at_a_time`); in root's /run/hoststack (the pid files' directory): a lock in a
# directory anyone may write could be made and held by any local user
STEP_LOCK = Path("/run/hoststack/deploy-step.lock")
STEP_WAIT = 600.0  # seconds a step waits for one an interrupted deploy left running (pip, apt take minutes at most)
NOT_FOUND = re.compile(r"Unable to locate package (\S+)|Package '?([^' ]+)'? has no installation candidate")


class Fail(Exception):
    """The one-line cause the operator sees."""


def sh(argv: list[str], env: dict[str, str] | None = None, timeout: float = 900,
       stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv (never a shell), `stdin` its input (a secret that must not show in `ps`); the caller reads
    returncode."""
    return subprocess.run(argv, capture_output=True, text=True, errors="replace", env=env or BASE_ENV,
                          timeout=timeout, check=False, input=stdin)


def _disk_full(path: str | Path, text: str) -> None:
    if "No space left on device" in text or "enough free space" in text:
        raise Fail(f"disk full: {path}")


@contextlib.contextmanager
def space(path: str | Path) -> Iterator[None]:
    """Name the directory when a write runs out of space."""
    try:
        yield
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise Fail(f"disk full: {path}") from e
        raise


def write(path: Path, content: str, mode: int) -> None:
    """Replace a file atomically: readers see the old or the new content, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with space(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            os.fchmod(f.fileno(), mode)
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def stamp(path: str, key: str, value: str) -> None:
    """Record that component `key` of the deploy is now `value` (read by the next probe)."""
    p = Path(path)
    recorded = json.loads(p.read_text()) if p.exists() else {}
    recorded[key] = value
    write(p, json.dumps(recorded, sort_keys=True) + "\n", 0o644)


def _missing(packages: list[str]) -> list[str]:
    """One dpkg-query for all packages: those not fully installed."""
    if not packages:
        return []
    p = sh(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages])
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
        return sh(["systemctl", "is-active", "--quiet", a["unit"]]).returncode == 0
    return _supervisor_pid(a["pidfile"], a["supervisor"]) is not None


def config_value(path: str, key: str) -> str | None:
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


def probe_host(a: dict[str, Any]) -> dict[str, Any]:
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


def _installed(base: Path) -> tuple[str | None, str | None]:
    """The venv `current` names and the HostStack version in it, when an install finished there: what a failed
    upgrade rolls back to."""
    link = base / "current"
    found = sorted(link.glob("lib/python*/site-packages/hoststack-*.dist-info"))
    if not link.is_symlink() or not (link / ".complete").exists() or not found:
        return None, None
    return os.readlink(link), found[0].name[len("hoststack-"):-len(".dist-info")]


def probe(a: dict[str, Any]) -> dict[str, Any]:
    """Everything the controller needs to plan, in one round trip; Fail when it runs as another user than root, or
    the host's python3 is not the one the wheels are built for (`python`).

    `token` is the host token the agent presents (the one it renewed, else its config's), `config_token` the
    one in its config: the controller keeps the config as it is while the coordinator still accepts the
    first, so a redeploy does not rewrite the config (and restart the agent). `current` is the venv installed
    (`current_version` the version in it), None on a fresh host.
    """
    if os.geteuid() != 0:  # the config unread, the coordinator would be asked for a token, voiding the agent's
        raise Fail(f"the SSH user is not root (uid {os.geteuid()}): a deploy installs packages and services, and "
                   "reads the agent's token")
    found = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if found != a["python"]:  # its venv could not take the wheels (nor run what an earlier deploy installed)
        raise Fail(f"python3 on the host is {found}; the agent's wheels are built for Python {a['python']} "
                   "(the deployer's)")
    out = probe_host(a)
    out["running"] = _running(a, out["systemd"])
    out["current"], out["current_version"] = _installed(Path(a["base"]))
    if a.get("token_key"):
        configured = out["config_token"] = config_value(a["config"], a["token_key"])
        out["token"] = configured and (_renewed_token(a.get("token_file"), configured) or configured)
    return out


def packages(a: dict[str, Any]) -> dict[str, Any]:
    """Install the missing packages; refresh the index once only if one has no candidate."""
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *a["packages"]]
    p = sh(argv, APT_ENV)
    if p.returncode and a["refresh"] and NOT_FOUND.search(p.stderr):
        sh(["apt-get", "update", "-q"], APT_ENV)
        p = sh(argv, APT_ENV)
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


def unpack_verified(tar: tarfile.TarFile, what: str, digest: str, into: Path, members: list[tarfile.TarInfo],
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


def _make_current(base: Path, venv: str) -> None:
    """Point `current` at `venv` atomically (the service runs what it names from its next start)."""
    tmp = base / ".current.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(venv)
    os.replace(tmp, base / "current")


def install(a: dict[str, Any]) -> dict[str, Any]:
    """Check the uploaded wheelhouse's digest, unpack it into a new venv and make that `current` (the old one
    keeps running). The venv sees the host's site-packages only where the spec says so; a venv of the same
    digest is reused as it is, as the digest covers our wheel, which holds the spec."""
    base, digest = Path(a["base"]), a["digest"]
    venv, wheels = base / f"venv-{digest}", base / f"wheels-{digest}"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(wheels, ignore_errors=True)
        with space(base), tarfile.open(a["tar"]) as tar:
            unpack_verified(tar, f"wheelhouse {a['tar']}", digest, wheels, sorted(tar.getmembers(),
                            key=lambda m: m.name), lambda n: "/" not in n and n.endswith(".whl"))
        system = ["--system-site-packages"] if a["system_site_packages"] else []
        p = sh(["/usr/bin/python3", "-m", "venv", *system, "--without-pip", str(venv)])
        if p.returncode:
            _disk_full(base, p.stderr)
            raise Fail(f"venv: {p.stderr.strip()[-200:]}")
        whls = sorted(str(w) for w in wheels.glob("*.whl"))
        pip = next(w for w in whls if Path(w).name.startswith("pip-"))
        p = sh([str(venv / "bin/python"), f"{pip}/pip", "install", "-q", "--no-index", "--no-deps",
                 "--disable-pip-version-check", *whls])
        if p.returncode:
            _disk_full(base, p.stderr + p.stdout)
            raise Fail(f"pip: {(p.stderr or p.stdout).strip().splitlines()[-1]}")
        (venv / ".complete").touch()
    _make_current(base, venv.name)
    shutil.rmtree(wheels, ignore_errors=True)
    Path(a["tar"]).unlink(missing_ok=True)
    stamp(a["stamp"], "wheels", digest)
    return {"venv": str(venv)}


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
        shown = sh(["systemctl", "show", "-p", "ActiveState,SubState,ExecMainStatus", a["unit"]]).stdout
        p = {k: v for k, _, v in (line.partition("=") for line in shown.splitlines())}
        state = " ".join(dict.fromkeys((p.get("ActiveState", "?"), p.get("SubState", "?"))))
        state += f" (exit {p['ExecMainStatus']})" if p.get("ExecMainStatus", "0") != "0" else ""
        lines = sh(["journalctl", "-u", a["unit"], "-n", str(n), "--no-pager", "-o", "cat"]).stdout.splitlines()
    else:
        running = _supervisor_pid(a["pidfile"], a["supervisor"]) is not None
        state, lines = f"supervisor {'running' if running else 'not running'}", _tail(a["log"], n)
    return {"state": state[:200], "lines": [line[:500] for line in lines[-n:]]}


def _kept(path: str) -> Path:
    """Where the config a deploy replaced waits until the new agent is Connected (a rollback puts it back)."""
    return Path(path + ".previous")


def config(a: dict[str, Any]) -> dict[str, Any]:
    """Write the agent's config (it holds the host token: mode 0600) and the files that go with it (the CA,
    the agent's certificate and key when they are renewed, which are stamped with their expiry); the config
    it replaces is kept beside it (`_kept`)."""
    for path, content, mode in a.get("files", []):
        write(Path(path), content, mode)
    path, kept = Path(a["path"]), _kept(a["path"])
    replaced = path.read_text() if path.exists() else None
    if replaced is not None:
        write(kept, replaced, 0o600)
    write(path, a["content"], 0o600)
    if replaced is None:
        kept.unlink(missing_ok=True)
    if a.get("tls_expires"):
        stamp(a["stamp"], "tls", json.dumps([time.time(), a["tls_expires"]]))
    stamp(a["stamp"], "config", a["digest"])
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
    write(Path(a["pidfile"]), f"{p.pid}\n", 0o644)
    return p.pid


def systemctl(*args: str) -> None:
    p = sh(["systemctl", *args])
    if p.returncode:
        raise Fail(f"systemctl {' '.join(args)}: {p.stderr.strip()[-200:]}")


def _prune(base: Path, previous: str | None = None) -> None:
    """Remove venvs other than `current` and `previous` (what a rollback would go back to)."""
    keep = {os.readlink(base / "current") if (base / "current").is_symlink() else None, previous}
    for d in base.glob("venv-*"):
        if d.name not in keep:
            shutil.rmtree(d, ignore_errors=True)


def put_service(a: dict[str, Any], systemd: bool) -> None:
    """Write the unit (systemd) or the supervisor script."""
    if systemd:
        write(Path(a["unit_path"]), a["content"], 0o644)
    else:
        write(Path(a["supervisor"]), a["content"], 0o755)


def running(a: dict[str, Any], systemd: bool) -> bool:
    """Whether the service `a` (unit, pidfile, supervisor) runs."""
    return _running(a, systemd)


def restart(a: dict[str, Any], systemd: bool) -> int | None:
    """(Re)start the service; the supervisor's pid where there is no systemd."""
    if systemd:
        systemctl("restart", a["unit"])
        return None
    _stop_supervised(a["pidfile"], a["supervisor"])
    return _start_supervised(a)


def start(a: dict[str, Any], systemd: bool) -> int | None:
    """Start the service unless it runs."""
    if _running(a, systemd):
        return None
    if systemd:
        systemctl("start", a["unit"])
        return None
    return _start_supervised(a)


def stop(a: dict[str, Any], systemd: bool) -> None:
    if systemd:
        systemctl("stop", a["unit"])
    else:
        _stop_supervised(a["pidfile"], a["supervisor"])


def service(a: dict[str, Any]) -> dict[str, Any]:
    """Install the systemd unit or the supervisor script, (re)start the agent, drop old venvs but the one it
    replaced (`previous`), which stays until the new agent is Connected."""
    systemd = a["systemd"]
    put_service(a, systemd)
    if systemd:
        systemctl("daemon-reload")
        systemctl("enable", "--quiet", a["unit"])
    pid = restart(a, systemd)
    _prune(Path(a["base"]), a.get("previous"))
    stamp(a["stamp"], "service", a["digest"])
    return {"pid": pid}


def rollback(a: dict[str, Any]) -> dict[str, Any]:
    """Put back what ran before a deploy whose agent did not come up: `previous` as `current`, the kept config
    (when the deploy wrote one), and the stamp as the probe read it, so the next deploy redoes every step; then
    restart the agent."""
    base = Path(a["base"])
    if not (base / a["previous"] / ".complete").exists():
        raise Fail(f"{base / a['previous']} is not there any more")
    _make_current(base, a["previous"])
    if a["config"] and _kept(a["config"]).exists():
        os.replace(_kept(a["config"]), a["config"])
    write(Path(a["stamp"]), json.dumps(a["recorded"], sort_keys=True) + "\n", 0o644)
    return {"pid": restart(a, a["systemd"])}


def clean_up(a: dict[str, Any]) -> dict[str, Any]:
    """Once the new agent is Connected: drop the venvs but `current`, and the config it replaced."""
    _prune(Path(a["base"]))
    _kept(a["config"]).unlink(missing_ok=True)
    return {}


FUNCTIONS = {f.__name__: f for f in (probe, packages, install, config, service, status, rollback, clean_up)}


@contextlib.contextmanager
def one_step_at_a_time(step: str, wait: float = STEP_WAIT) -> Iterator[None]:
    """Hold the host's step lock (`STEP_LOCK`) while a step runs. Deploys of a host never overlap (the coordinator's
    deploy lock), but a step goes on here when its deploy is interrupted (Ctrl-C, the controller gone): nothing
    stops it, and the next deploy's steps would run beside it (two installs into one venv, two supervisors). They
    wait for it instead, up to `wait` seconds, then Fail naming it."""
    STEP_LOCK.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(STEP_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                    raise Fail(f"another deploy's step still runs here ({holder}) after {wait:g}s; try again once "
                               "it ended") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{step}, pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def dispatch(functions: Mapping[str, Callable[[dict[str, Any]], Any]], one_at_a_time: bool = False) -> None:
    """Run the function of `functions` that argv names on the JSON arguments on stdin (with `one_at_a_time`, under
    the step lock): its answer as one JSON line on stdout, a Fail (or an OSError) as one line on stderr and exit 2."""
    fn = functions[sys.argv[1]]
    args = json.loads(sys.stdin.read())
    try:
        with one_step_at_a_time(fn.__name__) if one_at_a_time else contextlib.nullcontext():
            out = fn(args)
    except Fail as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"disk full: {e.filename}" if e.errno == errno.ENOSPC else f"{fn.__name__}: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(out))


def main() -> None:
    """An agent's step, one at a time (a control node's steps have the node's lease instead, deployer.remote.node:
    a second install is refused at once rather than made to wait)."""
    dispatch(FUNCTIONS, one_at_a_time=True)
