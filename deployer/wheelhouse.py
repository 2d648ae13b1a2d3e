"""The wheelhouse a host installs from: the HostStack wheel plus the agent's dependency wheels.

Built on the controller, so hosts need no package index and no compiler. Both halves are cached by
content: the HostStack wheel by a hash of its source files (built reproducibly, SOURCE_DATE_EPOCH),
the dependency wheels by a hash of the requirement specifiers. The result is one deterministic tar
whose digest names what a host would install; an unchanged digest means nothing to upload.

A control node's own deployer (the coordinator's automatic deploys) is a controller too, one that may have
no index and has no compiler: `hs-ctl install` ships it, in the source tar, the wheels its builds need
(`offline_wheels`), and it builds from those alone (`Index.offline`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import re
import shutil
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentkit.proc import ProcessError, run
from deployer.agentspec import AgentSpec
from deployer.errors import BuildError
from deployer.remote.host import wheels_digest

KEEP = 4  # cached builds of the HostStack wheel kept (newest first)
OFFLINE = "wheels"  # the source tar's directory of the wheels a control node's deployer builds from
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"  # what the wheels are built for (compiled ones: its ABI)


@dataclass(frozen=True)
class Index:
    """Where pip finds what it builds from: the package index and `find_links`, or `find_links` alone
    (`offline`: no index is asked, and what is there is taken as it is, a wheel or a source to build)."""

    find_links: tuple[str, ...] = ()
    offline: bool = False

    def args(self) -> list[str]:
        links = [a for link in self.find_links for a in ("--find-links", link)]
        return ["--no-index", *links] if self.offline else links


@dataclass(frozen=True)
class Bundle:
    tar: Path
    digest: str
    version: str


def _pyproject(source: Path) -> dict[str, Any]:
    try:
        return tomllib.loads((source / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BuildError(f"wheel build input {source}: {e}") from e


def source_version(source: Path) -> str:
    """The agent version of `source`: agentkit.__version__, what agents report in HostFacts."""
    path = source / "agentkit" / "__init__.py"
    try:
        m = re.search(r'^__version__ = "([^"]+)"', path.read_text(), re.M)
    except OSError as e:
        raise BuildError(f"wheel build input {source}: {e}") from e
    if not m:
        raise BuildError(f"no __version__ in {path}")
    return m.group(1)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(spec: AgentSpec, source: Path) -> list[str]:
    """The agent's requirement specifiers, as pyproject.toml declares them."""
    deps = _pyproject(source)["project"]["dependencies"]
    declared = {_norm(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]): d for d in deps}
    missing = [r for r in spec.requirements if _norm(r) not in declared]
    if missing:
        raise BuildError(f"{spec.name} requires {missing}, not declared in {source / 'pyproject.toml'}")
    return [declared[_norm(r)] for r in spec.requirements]


def _package_dirs(source: Path) -> list[Path]:
    patterns = _pyproject(source).get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {})
    include = patterns.get("include", ["*"])
    return sorted(p for p in source.iterdir()
                  if p.is_dir() and (p / "__init__.py").exists() and any(fnmatch.fnmatch(p.name, i) for i in include))


def source_files(source: Path) -> list[Path]:
    files = [source / "pyproject.toml"]
    for d in _package_dirs(source):
        files += sorted(f for f in d.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    return files


def _hash_members(members: list[tuple[str, Path]]) -> str:
    """Over each (name, file): the name and the file's SHA-256, in the order given."""
    h = hashlib.sha256()
    for name, f in members:
        h.update(name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _hash_files(files: list[Path], root: Path) -> str:
    return _hash_members([(str(f.relative_to(root)), f) for f in files])


def _pip(*args: str) -> None:
    """pip of the controller's interpreter; SOURCE_DATE_EPOCH makes wheel zips reproducible."""
    argv = ["env", "SOURCE_DATE_EPOCH=315532800", sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        run(argv, timeout=900)
    except ProcessError as e:
        raise BuildError(f"pip {args[0]}: {e.stderr.strip().splitlines()[-1] if e.stderr.strip() else e}") from e


def hoststack_wheel(source: Path, cache: Path, index: Index = Index()) -> Path:
    """Build (once per source content) the HostStack wheel from a copy of the source tree. A build in use
    is marked the most recently used, and one pruned as it was looked at (by a deploy of another source
    at the same time) is built again."""
    files = source_files(source)
    out = cache / f"hoststack-{_hash_files(files, source)[:20]}"
    wheels: list[Path] = []
    for _ in range(2):
        try:
            os.utime(out)  # the newest for _prune: it removes the least recently used builds
        except FileNotFoundError:
            _build_wheel(source, files, cache, out, index)
        if len(wheels := list(out.glob("*.whl"))) == 1:
            return wheels[0]
        shutil.rmtree(out, ignore_errors=True)  # pruned under us: again
    raise BuildError(f"expected one wheel in {out}, found {wheels}")


def _build_wheel(source: Path, files: list[Path], cache: Path, out: Path, index: Index) -> None:
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        tree = Path(tmp) / "src"
        for f in files:  # a copy: building in place would write build/ and egg-info into the source
            dest = tree / f.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
        # the build backend (pyproject's build-system) is fetched as dependencies are: `index`
        _pip("wheel", "-q", *index.args(), "--no-deps", "-w", str(Path(tmp) / "out"), str(tree))
        _publish(Path(tmp) / "out", out)
    _prune(cache, "hoststack-*")


def _publish(built: Path, out: Path) -> None:
    """Give a build made in a directory of this process's own its name in the cache, whole (a rename); one that
    another deploy put there meanwhile is the same build, and counts as done."""
    try:
        built.rename(out)
    except OSError:
        if not out.is_dir():
            raise


def _dependency_wheels(reqs: list[str], cache: Path, index: Index) -> list[Path]:
    """Wheels for `reqs` and everything they need, plus pip (hosts install with it)."""
    key = hashlib.sha256("\n".join([sys.version.split()[0], *sorted(reqs)]).encode()).hexdigest()[:20]
    out = cache / f"deps-{key}"
    if not (out / ".complete").exists():
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            built = Path(tmp) / "out"
            _pip("wheel", "-q", *index.args(), "-w", str(built), *reqs, "pip")
            (built / ".complete").touch()
            if out.is_dir() and not (out / ".complete").exists():
                shutil.rmtree(out)  # what an older deployer, which built in place, left unfinished
            _publish(built, out)
    return sorted(out.glob("*.whl"))


def _prune(cache: Path, pattern: str) -> None:
    old = sorted(cache.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]
    for p in old:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _tar(wheels: list[Path], cache: Path) -> tuple[Path, str]:
    """A byte-for-byte reproducible tar of the wheels; its name carries the digest of their contents."""
    digest = wheels_digest((w.name, iter([w.read_bytes()])) for w in sorted(wheels, key=lambda p: p.name))
    path = cache / f"wheelhouse-{digest[:20]}.tar"
    if _write_tar(path, [(w.name, w) for w in sorted(wheels, key=lambda p: p.name)]):
        _prune(cache, "wheelhouse-*.tar")
    return path, digest


def _write_tar(path: Path, members: Sequence[tuple[str, Path]]) -> bool:
    """Write a byte-for-byte reproducible tar of `members` (name in the tar, file) to `path` unless it is there;
    whether it was written. Two deploys may build the same tar at once: each writes a file of its own, renamed
    into place whole."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        try:
            os.fchmod(f.fileno(), 0o644)
            with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for name, file in members:
                    data = file.read_bytes()
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(data), 0o644, 0
                    tar.addfile(info, io.BytesIO(data))
        except BaseException:
            os.unlink(f.name)
            raise
    os.replace(f.name, path)
    return True


def offline_wheels(specs: Iterable[AgentSpec], source: Path, cache: Path, index: Index = Index()) -> list[Path]:
    """Every wheel a deployer needs to build the wheelhouses of `specs` from `source` with no index: each
    one's dependency wheels (as this controller resolved them) and the HostStack wheel's build backend."""
    backend = _pyproject(source).get("build-system", {}).get("requires", [])
    sets = [*(_dependency_wheels(requirements(s, source), cache, index) for s in specs),
            _dependency_wheels(backend, cache, index)]
    by_name = {w.name: w for ws in sets for w in ws if not w.name.startswith("hoststack-")}
    return [by_name[name] for name in sorted(by_name)]


def source_tar(source: Path, cache: Path, wheels: Sequence[Path] = ()) -> tuple[Path, str]:
    """The wheel build input (pyproject.toml and the packages, and `wheels` in OFFLINE/) as one reproducible
    tar, named by its content: a control node's own deployer builds agent wheels from it."""
    members = [*((str(f.relative_to(source)), f) for f in source_files(source)),
               *((f"{OFFLINE}/{w.name}", w) for w in wheels)]
    digest = _hash_members(members)
    path = cache / f"source-{digest[:20]}.tar"
    if _write_tar(path, members):
        _prune(cache, "source-*.tar")
    return path, digest


def build(spec: AgentSpec, source: Path, cache: Path, index: Index = Index()) -> Bundle:
    """The wheelhouse for `spec` built from `source` (cached; a few ms when nothing changed)."""
    cache.mkdir(parents=True, exist_ok=True)
    own = hoststack_wheel(source, cache, index)
    deps = [w for w in _dependency_wheels(requirements(spec, source), cache, index)
            if not w.name.startswith("hoststack-")]
    tar, digest = _tar([own, *deps], cache)
    return Bundle(tar=tar, digest=digest, version=source_version(source))
