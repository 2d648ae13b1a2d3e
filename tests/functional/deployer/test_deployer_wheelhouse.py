"""deployer.wheelhouse and the version check: specifiers from pyproject, reproducible tars, versions."""

from __future__ import annotations

import pytest

from deployer import wheelhouse
from deployer.agentspec import AgentSpec
from deployer.deploy import AGENTS, DeploySettings, Target, current_version, deploy, needs_upgrade
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
