"""deployer.wheelhouse and the version check: specifiers from pyproject, reproducible tars, versions."""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
from pathlib import Path

import pytest

from deployer import wheelhouse
from deployer.agentspec import AgentSpec
from deployer.deploy import AGENTS, DeploySettings, current_version, deploy, needs_upgrade
from deployer.model import Target
from testbed.deploylab import REPO, agent_source


@pytest.mark.parametrize("spec", AGENTS.values(), ids=list(AGENTS))
def test_requirements_come_from_pyproject(spec):
    reqs = wheelhouse.requirements(spec, REPO)
    assert [r.split(">")[0].split("=")[0] for r in reqs] == list(spec.requirements)


def test_an_undeclared_requirement_is_refused():
    bad = AgentSpec("x", "x", (), ("not-a-dependency",), ())
    with pytest.raises(wheelhouse.BuildError, match="not-a-dependency"):
        wheelhouse.requirements(bad, REPO)


def test_tar_is_reproducible_and_named_by_content(tmp_path):
    (tmp_path / "c1").mkdir()
    wheels = []
    for name in ("b-1-py3-none-any.whl", "a-1-py3-none-any.whl"):
        (tmp_path / name).write_bytes(name.encode() * 100)
        wheels.append(tmp_path / name)
    path, digest = wheelhouse._tar(wheels, tmp_path / "c1")
    data = path.read_bytes()
    path.unlink()
    again, digest2 = wheelhouse._tar(list(reversed(wheels)), tmp_path / "c1")
    assert (digest2, again.read_bytes()) == (digest, data) and digest[:20] in again.name
    (tmp_path / "a-1-py3-none-any.whl").write_bytes(b"changed")
    assert wheelhouse._tar(wheels, tmp_path / "c1")[1] != digest


def test_two_deployers_building_one_wheelhouse_each_write_a_file_of_their_own(tmp_path):
    """Another deployer of this controller writes the same tar meanwhile, into its own temporary file: the tar
    this one renames into place stays whole, whatever the other still writes."""
    wheels = [tmp_path / "a-1-py3-none-any.whl"]
    wheels[0].write_bytes(b"wheel" * 1000)
    want, digest = wheelhouse._tar(wheels, tmp_path / "alone")
    cache = tmp_path / "cache"
    cache.mkdir()
    with open(cache / f"wheelhouse-{digest[:20]}.tmp", "wb") as other:  # the other's file, as it names it
        other.write(b"half")
        path, _ = wheelhouse._tar(wheels, cache)
        other.write(b"the rest of the other's tar")
    assert path.read_bytes() == want.read_bytes()
    assert [p.name for p in cache.iterdir() if p != path] == [other.name.rsplit("/", 1)[1]]


def test_dependency_wheels_appear_whole_and_one_another_deployer_built_first_is_taken(tmp_path, monkeypatch):
    """pip builds in a directory of this deployer's own, so another never takes a half-built set for the
    cache's; a set another deployer put in place meanwhile is used as it is."""
    cache = tmp_path / "cache"
    cache.mkdir()
    theirs: list[str] = []

    def pip(*args: str) -> None:
        into = Path(args[args.index("-w") + 1])
        (into / "aiohttp-3.9-py3-none-any.whl").parent.mkdir(parents=True, exist_ok=True)
        (into / "aiohttp-3.9-py3-none-any.whl").write_text("half")
        assert not [*cache.glob("deps-*/*.whl")], "a half-built set is visible under the cache's name"
        (into / "pip-24-py3-none-any.whl").write_text("pip")
        if theirs:
            cached_deps(cache, ["aiohttp"], {name: "theirs" for name in theirs})

    monkeypatch.setattr(wheelhouse, "_pip", pip)
    assert [w.name for w in wheelhouse._dependency_wheels(["aiohttp"], cache, wheelhouse.Index())] == [
        "aiohttp-3.9-py3-none-any.whl", "pip-24-py3-none-any.whl"]
    assert [p.name.startswith("deps-") for p in cache.iterdir()] == [True]
    cache2 = cache.with_name("cache2")
    cache2.mkdir()
    cache, theirs[:] = cache2, ["aiohttp-3.9-py3-none-any.whl"]
    got = wheelhouse._dependency_wheels(["aiohttp"], cache, wheelhouse.Index())
    assert [w.read_text() for w in got] == ["theirs"] and len([*cache.iterdir()]) == 1


def test_needs_upgrade_compares_with_the_source_version(tmp_path):
    src = agent_source(tmp_path / "src", "7.1.0")
    settings = DeploySettings(source_dir=src)
    assert current_version(settings) == "7.1.0"
    assert needs_upgrade("7.0.9", settings) and not needs_upgrade("7.1.0", settings)
    assert '"7.1.0"' in (src / "pyproject.toml").read_text()


def test_deploy_refuses_unknown_agents_and_duplicate_names():
    with pytest.raises(ValueError, match="unknown agent"):
        deploy("nosuchagent", [], "http://c")
    t = Target("a", "198.18.0.9", "u", "t")
    with pytest.raises(ValueError, match="unique"):
        deploy("kvmagent", [t, t], "http://c", settings=DeploySettings())


def test_source_version_is_agentkits(tmp_path):
    (tmp_path / "agentkit").mkdir()
    (tmp_path / "agentkit" / "__init__.py").write_text('"""x"""\n\n__version__ = "3.2.1"\n')
    assert wheelhouse.source_version(tmp_path) == "3.2.1"
    (tmp_path / "agentkit" / "__init__.py").write_text('version = "3.2.1"\n')
    with pytest.raises(wheelhouse.BuildError, match="no __version__ in"):
        wheelhouse.source_version(tmp_path)
    with pytest.raises(wheelhouse.BuildError, match="wheel build input"):
        wheelhouse.source_version(tmp_path / "absent")


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


PYPROJECT = ('[build-system]\nrequires = ["setuptools>=68"]\n'
             '[project]\nname = "hoststack"\ndependencies = ["aiohttp>=3.9,<4", "pydantic>=2.5"]\n'
             '[tool.setuptools.packages.find]\ninclude = ["agentkit*", "deployer*"]\n')


def test_source_files_are_the_included_packages_without_caches(tmp_path):
    src = tree(tmp_path, {"pyproject.toml": PYPROJECT, "agentkit/__init__.py": '__version__ = "1.0"\n',
                          "deployer/__init__.py": "", "deployer/x/y.py": "", "deployer/__pycache__/z.pyc": "",
                          "docs/a.md": "", "other/__init__.py": "", "agentkitish.py": ""})
    assert [str(f.relative_to(src)) for f in wheelhouse.source_files(src)] == [
        "pyproject.toml", "agentkit/__init__.py", "deployer/__init__.py", "deployer/x/y.py"]


def test_a_bad_pyproject_is_a_build_error(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project\n")
    with pytest.raises(wheelhouse.BuildError, match="wheel build input"):
        wheelhouse.source_files(tmp_path)


def cached_deps(cache: Path, reqs: list[str], wheels: dict[str, str]) -> None:
    """What `_dependency_wheels(reqs)` built before, in its place in `cache`."""
    key = hashlib.sha256("\n".join([sys.version.split()[0], *sorted(reqs)]).encode()).hexdigest()[:20]
    tree(cache / f"deps-{key}", {".complete": "", **wheels})


def test_an_unchanged_source_builds_from_the_cache_without_pip(tmp_path):
    """Both halves cached (the unit guard fails any pip run): the same wheelhouse, named by its content."""
    src = tree(tmp_path / "src", {"pyproject.toml": PYPROJECT, "agentkit/__init__.py": '__version__ = "1.0"\n'})
    cache = tmp_path / "cache"
    spec = AgentSpec("x", "x", (), ("aiohttp",), ())
    own = cache / f"hoststack-{wheelhouse._hash_files(wheelhouse.source_files(src), src)[:20]}"
    tree(own, {"hoststack-1.0-py3-none-any.whl": "own"})
    cached_deps(cache, ["aiohttp>=3.9,<4"], {"aiohttp-3.9-py3-none-any.whl": "dep", "pip-24-py3-none-any.whl": "pip",
                                             "hoststack-0.9-py3-none-any.whl": "an old copy pip fetched"})
    bundle = wheelhouse.build(spec, src, cache)
    with tarfile.open(bundle.tar) as tar:
        assert sorted(tar.getnames()) == ["aiohttp-3.9-py3-none-any.whl", "hoststack-1.0-py3-none-any.whl",
                                          "pip-24-py3-none-any.whl"]
    assert bundle.version == "1.0" and bundle.digest[:20] in bundle.tar.name
    assert wheelhouse.build(spec, src, cache) == bundle


def test_prune_keeps_the_newest_builds(tmp_path):
    for i in range(wheelhouse.KEEP + 2):
        path = tmp_path / f"wheelhouse-{i}.tar"
        path.write_text("")
        os.utime(path, (i, i))
    wheelhouse._prune(tmp_path, "wheelhouse-*.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"wheelhouse-{i}.tar" for i in range(2, wheelhouse.KEEP + 2)]


def test_the_source_tar_is_the_build_input_named_by_content(tmp_path):
    src = agent_source(tmp_path / "src")
    path, digest = wheelhouse.source_tar(src, tmp_path / "cache")
    again = wheelhouse.source_tar(src, tmp_path / "cache2")
    assert again[1] == digest and again[0].read_bytes() == path.read_bytes()
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert names == [str(f.relative_to(src)) for f in wheelhouse.source_files(src)]
    assert "pyproject.toml" in names and "agentkit/__init__.py" in names
    assert wheelhouse.source_version(src) == current_version(DeploySettings(source_dir=src))


def test_pip_asks_no_index_offline_and_takes_the_find_links_either_way():
    assert wheelhouse.Index().args() == []
    assert wheelhouse.Index(("/w", "/x")).args() == ["--find-links", "/w", "--find-links", "/x"]
    assert wheelhouse.Index(("/w",), offline=True).args() == ["--no-index", "--find-links", "/w"]
    assert DeploySettings(find_links=["/w"], no_index=True).index() == wheelhouse.Index(("/w",), True)


def test_offline_wheels_are_every_agents_dependencies_and_the_build_backend(tmp_path):
    """A control node's deployer builds from these alone: each agent's dependency wheels as this controller
    resolved them (a wheel two agents share once), and the backend pyproject builds the HostStack wheel with."""
    src = tree(tmp_path / "src", {"pyproject.toml": PYPROJECT.replace('"pydantic>=2.5"', '"pydantic>=2.5", "dnslib"'),
                                  "agentkit/__init__.py": '__version__ = "1.0"\n'})
    cache = tmp_path / "cache"
    cached_deps(cache, ["aiohttp>=3.9,<4"], {"aiohttp-3.9-py3-none-any.whl": "", "pip-24-py3-none-any.whl": "",
                                             "hoststack-0.9-py3-none-any.whl": "an old copy pip fetched"})
    shared = {"aiohttp-3.9-py3-none-any.whl": "", "dnslib-0.9-py3-none-any.whl": "", "pip-24-py3-none-any.whl": ""}
    cached_deps(cache, ["aiohttp>=3.9,<4", "dnslib"], shared)
    cached_deps(cache, ["setuptools>=68"], {"setuptools-80-py3-none-any.whl": "", "pip-24-py3-none-any.whl": ""})
    specs = [AgentSpec("a", "a", (), ("aiohttp",), ()), AgentSpec("b", "b", (), ("aiohttp", "dnslib"), ())]
    assert [w.name for w in wheelhouse.offline_wheels(specs, src, cache)] == [
        "aiohttp-3.9-py3-none-any.whl", "dnslib-0.9-py3-none-any.whl", "pip-24-py3-none-any.whl",
        "setuptools-80-py3-none-any.whl"]


def test_the_source_tar_carries_the_offline_wheels_and_is_named_by_them_too(tmp_path):
    src = agent_source(tmp_path / "src")
    wheels = [tmp_path / "b-1-py3-none-any.whl", tmp_path / "a-1-py3-none-any.whl"]
    for w in wheels:
        w.write_bytes(w.name.encode())
    bare = wheelhouse.source_tar(src, tmp_path / "cache")[1]
    path, digest = wheelhouse.source_tar(src, tmp_path / "cache", wheels)
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert tar.extractfile("wheels/a-1-py3-none-any.whl").read() == b"a-1-py3-none-any.whl"  # type: ignore[union-attr]
    assert names[-2:] == ["wheels/b-1-py3-none-any.whl", "wheels/a-1-py3-none-any.whl"] and digest != bare
    wheels[0].write_bytes(b"another build")
    assert wheelhouse.source_tar(src, tmp_path / "cache", wheels)[1] != digest
