"""deployer.tasks: a host gets exactly the steps that make a difference, and the program that runs them."""

from __future__ import annotations

import functools
import importlib.abc
import io
import json
import sys
import tarfile
import traceback
from pathlib import Path
from types import ModuleType

import pytest

from deployer import render, tasks
from deployer.kvmagent import SPEC
from deployer.remote import host, node
from deployer.wheelhouse import Bundle
from testbed import hostprogram

BUNDLE = Bundle(tar=Path("/cache/wheelhouse-x.tar"), digest="w" * 64, version="1.0")
CONFIG = render.agent_config(SPEC, "http://c:8740", "u1", "t" * 16)
WANT = tasks.Desired(BUNDLE, CONFIG)
SUPERVISED = render.digest(render.supervisor_script(SPEC.service))


def probe(stamp=None, missing=(), systemd=False, running=True) -> dict:
    return {"stamp": stamp or {}, "missing": list(missing), "systemd": systemd, "running": running}


CURRENT = {"wheels": BUNDLE.digest, "config": render.digest(CONFIG), "service": SUPERVISED}


@pytest.mark.parametrize("host, steps", [
    (probe(running=False), ["upload", "install", "config", "service"]),
    (probe(CURRENT), []),
    (probe(CURRENT, running=False), ["service"]),
    (probe(CURRENT, missing=["nftables"]), ["packages"]),
    (probe({**CURRENT, "config": "old"}), ["config", "service"]),
    (probe({**CURRENT, "wheels": "old"}), ["upload", "install", "service"]),
    (probe(CURRENT, systemd=True), ["service"]),  # the host now runs systemd: a unit replaces the script
])
def test_plan_runs_only_what_differs(host, steps):
    assert list(tasks.plan(SPEC, WANT, host)) == steps


def test_plan_arguments_carry_what_the_host_needs():
    p = tasks.plan(SPEC, WANT, probe(missing=["qemu-utils"], systemd=True, running=False))
    assert p["packages"] == {"packages": ["qemu-utils"], "refresh": True}
    assert p["install"]["tar"] == SPEC.upload_path(BUNDLE.digest) and p["install"]["base"] == "/opt/hoststack/kvmagent"
    assert p["config"]["content"] == CONFIG and p["config"]["path"] == "/etc/hoststack/kvmagent.toml"
    assert p["service"]["systemd"] and p["service"]["content"] == render.systemd_unit(SPEC.service)


def test_steps_keep_their_order_and_upload_the_bundle():
    names = [s.name for s in tasks.steps(SPEC, BUNDLE)]
    assert names == ["packages", "upload", "install", "config", "service"]
    upload = tasks.steps(SPEC, BUNDLE)[1]
    assert (upload.src, upload.dest) == (str(BUNDLE.tar), SPEC.upload_path(BUNDLE.digest))


MAX_ARG_STRLEN = 32 * 4096  # Linux's limit on one argv element: the program is one


def test_the_program_stays_well_within_one_argv_element():
    assert len(tasks.program(host, node).encode()) < MAX_ARG_STRLEN // 2
    assert "def node_probe" not in tasks.program(host)  # an agent's deploy ships what it calls


class NotInstalled(importlib.abc.MetaPathFinder):
    """The import system of a host, which has nothing of HostStack installed."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name.partition(".")[0] == "deployer":
            raise ModuleNotFoundError(f"No module named {name!r}")


@pytest.fixture(autouse=True)
def step_lock(tmp_path, monkeypatch) -> None:
    """The programs these tests run take their step lock in `tmp_path`: a unit test writes nothing of the system's
    (/run/hoststack is root's, and these tests run as nobody)."""
    monkeypatch.setattr(tasks, "program", functools.partial(hostprogram.program, step_lock=tmp_path / "step.lock"))


def run(monkeypatch, capsys, modules: tuple[ModuleType, ...], function: str, args: object) -> tuple[int, str, str]:
    """Run the program as `python3 -c` does on a host, in this process: none of our modules imported (they come
    back when the test ends) nor found, so that it has only those it makes."""
    for name in [n for n in sys.modules if n.partition(".")[0] == "deployer"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [NotInstalled(), *sys.meta_path])
    monkeypatch.setattr(sys, "argv", ["-c", function])
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(args)))
    code = 0
    try:
        exec(tasks.program(*modules), {"__name__": "__main__"})
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_an_agents_program_answers_one_json_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "a.log").write_text("one\ntwo\n")
    args = {"systemd": False, "pidfile": str(tmp_path / "a.pid"), "supervisor": "/x.sh", "log": str(tmp_path / "a.log"),
            "lines": 1}
    assert run(monkeypatch, capsys, (host,), "status", args) == (
        0, '{"state": "supervisor not running", "lines": ["two"]}\n', "")


def test_a_nodes_program_runs_its_steps_on_the_hosts_kit(tmp_path, monkeypatch, capsys):
    args = {"dirs": [], "files": [{"path": str(tmp_path / "a.toml"), "content": "x = 1\n", "mode": 0o600}]}
    assert run(monkeypatch, capsys, (host, node), "files", args) == (0, "{}\n", "")
    assert (tmp_path / "a.toml").read_text() == "x = 1\n"


def test_a_programs_failure_is_exit_2_and_one_line(tmp_path, monkeypatch, capsys):
    tar = tmp_path / "w.tar"
    with tarfile.open(tar, "w") as t:
        t.addfile(tarfile.TarInfo("a-1-py3-none-any.whl"), io.BytesIO(b""))
    args = {"base": str(tmp_path / "base"), "tar": str(tar), "digest": "0" * 64, "stamp": str(tmp_path / "stamp")}
    code, out, err = run(monkeypatch, capsys, (host, node), "install", args)
    assert (code, out) == (2, "") and err.endswith(" is not the 0000000000000000 the deployer built; not installed\n")
    assert err.count("\n") == 1


def test_a_bug_in_the_program_names_its_file_and_line(monkeypatch, capsys):
    with pytest.raises(KeyError) as e:
        run(monkeypatch, capsys, (host,), "status", {})
    frame = traceback.extract_tb(e.value.__traceback__)[-1]
    lines = Path(host.__file__ or "").read_text().splitlines()
    assert (frame.filename, lines[(frame.lineno or 0) - 1].strip()) == ("deployer/remote/host.py", 'n = a["lines"]')


def test_a_host_with_an_install_rolls_back_to_it_and_cleans_it_up_once_connected():
    upgraded = {**probe(CURRENT), "current": "venv-w0", "current_version": "0.9"}
    p = tasks.plan(SPEC, tasks.Desired(Bundle(BUNDLE.tar, "n" * 64, "1.0"), CONFIG), upgraded)
    assert p["service"]["previous"] == "venv-w0"  # kept until the new agent connects
    back = tasks.rollback_args(SPEC, upgraded, p)
    assert (back["previous"], back["config"], back["recorded"]) == ("venv-w0", None, CURRENT)  # the config unchanged
    assert tasks.rollback_args(SPEC, upgraded, {**p, "config": {}})["config"] == SPEC.config_path
    assert tasks.clean_up_args(SPEC, upgraded) == {"base": SPEC.base, "config": SPEC.config_path}
    fresh = probe(running=False)
    assert tasks.rollback_args(SPEC, fresh, tasks.plan(SPEC, WANT, fresh)) is None
    assert tasks.clean_up_args(SPEC, fresh) is None
