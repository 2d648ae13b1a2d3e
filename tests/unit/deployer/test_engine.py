"""deployer.engine without running ansible: host variables, tasks, the plugin it loads, results it translates."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import pytest
from ansible import constants as C
from ansible.inventory.host import Host
from ansible.plugins.connection.ssh import Connection as AnsibleSsh
from ansible.plugins.loader import connection_loader

from deployer import engine, tasks
from deployer.connection_plugins import hoststack_ssh
from deployer.engine import Call, Connection, Engine, HostRun, SshOptions, Upload
from deployer.model import Outcome

ENGINE = Engine("print('program')", SshOptions(control_path_dir="/cp", known_hosts="/kh", connect_timeout=7))


def test_host_vars_pin_the_fast_path_and_carry_the_credentials():
    v = ENGINE._host_vars(Connection("198.18.0.2", port=2222, user="admin", password="pw"))
    assert (v["ansible_connection"], v["ansible_host"], v["ansible_port"], v["ansible_user"]) == (
        "hoststack_ssh", "198.18.0.2", 2222, "admin")
    assert v["ansible_pipelining"] is True and v["ansible_python_interpreter"] == "/usr/bin/python3"
    assert (v["ansible_password"], v["ansible_timeout"], v["ansible_control_path_dir"]) == ("pw", 7, "/cp")
    assert "-o UserKnownHostsFile=/kh" in v["ansible_ssh_args"] and "ControlPersist=60s" in v["ansible_ssh_args"]
    assert "ansible_ssh_private_key_file" not in v
    # ansible's files on the host in root's home, where no other user can plant them a directory
    assert v["ansible_remote_tmp"].startswith("/root/")
    assert ENGINE._host_vars(Connection("", local=True))["ansible_remote_tmp"] == v["ansible_remote_tmp"]
    keyed = ENGINE._host_vars(Connection("198.18.0.2", key_file="/k"))
    assert keyed["ansible_ssh_private_key_file"] == "/k" and "ansible_password" not in keyed


def test_an_empty_password_is_still_a_password():
    assert ENGINE._host_vars(Connection("198.18.0.2", password=""))["ansible_password"] == ""


def test_a_call_runs_the_program_with_its_arguments_on_stdin_and_an_upload_copies():
    call = ENGINE._task(0, Call("probe", "probe"))
    assert call["name"] == "probe" and call["when"] == ["hs_on_0", "not hs_stop"]
    command = call["ansible.builtin.command"]
    assert command["argv"] == ["/usr/bin/python3", "-c", "print('program')", "probe"]
    assert (command["stdin"], command["stdin_add_newline"]) == ("{{ hs_in_0 }}", False)
    upload = ENGINE._task(3, Upload("upload", "/cache/w.tar", "/var/tmp/w.tar"))
    assert upload["ansible.builtin.copy"] == {"src": "/cache/w.tar", "dest": "/var/tmp/w.tar", "mode": "0644"}
    assert upload["when"] == ["hs_on_3", "not hs_stop"]


def test_ansible_loads_the_deployers_ssh_connection_with_the_options_of_its_own():
    engine._init(forks=1)
    loaded = connection_loader.get(engine.CONNECTION, class_only=True)
    assert inspect.getfile(loaded) == hoststack_ssh.__file__ and issubclass(loaded, AnsibleSsh)
    options = C.config.get_configuration_definitions("connection", engine.CONNECTION)
    assert {"password", "ssh_args", "ssh_executable", "pipelining", "control_path_dir"} <= set(options)


@pytest.mark.parametrize("result, text", [
    ({"rc": 2, "stderr": "Traceback...\napt: package x not found\n", "msg": "non-zero return code"},
     "apt: package x not found"),
    ({"rc": 1, "msg": "non-zero return code", "stderr": "boom"}, "boom"),
    ({"msg": "MODULE FAILURE", "module_stderr": "/bin/sh: 1: /usr/bin/python3: not found\n"},
     "MODULE FAILURE /bin/sh: 1: /usr/bin/python3: not found"),
    ({}, ""),
])
def test_failure_text_is_the_most_specific_one_ansible_kept(result, text):
    assert engine._failure_text(result) == text


@dataclass
class Named:
    name: str

    def get_name(self) -> str:
        return self.name


@dataclass
class Result:
    host: Named
    task: Named
    result: dict[str, Any]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, Outcome | None]] = []

    def started(self, host: str, step: str) -> None:
        self.events.append(("started", host, step, None))

    def finished(self, host: str, step: str, outcome: Outcome) -> None:
        self.events.append(("finished", host, step, outcome))


def test_events_report_only_steps_a_host_runs_as_outcomes():
    hosts = {"a": HostRun(Connection("198.18.0.2"), {"probe": {}, "config": {}}),
             "b": HostRun(Connection("198.18.0.3"), {"probe": {}})}
    listener = Recorder()
    events = engine._Events(hosts, listener, {}, {})
    for host in ("a", "b"):
        events.v2_runner_on_start(Named(host), Named("probe"))
    events.v2_runner_on_ok(Result(Named("a"), Named("probe"), {"stdout": '{"missing": []}'}))
    events.v2_runner_on_unreachable(Result(Named("b"), Named("probe"), {"msg": "ssh: Connection refused"}))
    events.v2_runner_on_start(Named("a"), Named("config"))
    events.v2_runner_on_failed(Result(Named("a"), Named("config"), {"rc": 2, "stderr": "disk full: /etc"}))
    events.v2_runner_on_start(Named("b"), Named("config"))  # skipped on b: no event
    events.v2_runner_on_ok(Result(Named("b"), Named("config"), {"skipped": True}))
    ok = Outcome(True, {"missing": []})
    refused = Outcome(False, error="ssh: Connection refused", unreachable=True)
    full = Outcome(False, error="disk full: /etc")
    assert listener.events == [("started", "a", "probe", None), ("started", "b", "probe", None),
                               ("finished", "a", "probe", ok), ("finished", "b", "probe", refused),
                               ("started", "a", "config", None), ("finished", "a", "config", full)]
    assert events.outcomes == {"a": {"probe": ok, "config": full}, "b": {"probe": refused}}


def test_ctrl_c_fails_the_steps_under_way_saying_so():
    """Before, a step interrupted had a `before` entry in the deploy log and never an `after`."""
    hosts = {h: HostRun(Connection(f"198.18.0.{i}"), {"probe": {}, "install": {}}) for i, h in enumerate("ab", 2)}
    listener = Recorder()
    events = engine._Events(hosts, listener, {}, {})
    for host in ("a", "b"):
        events.v2_runner_on_start(Named(host), Named("probe"))
    events.v2_runner_on_ok(Result(Named("a"), Named("probe"), {"stdout": "{}"}))
    events.interrupted()
    interrupted = Outcome(False, error=engine.INTERRUPTED)
    assert listener.events[-2:] == [("finished", "a", "probe", Outcome(True, {})),
                                    ("finished", "b", "probe", interrupted)]
    assert events.outcomes == {"a": {"probe": Outcome(True, {})}, "b": {"probe": interrupted}}


def test_a_stopped_host_runs_no_further_step_and_the_next_one_fails_with_the_reason():
    """Its deploy lock was lost (another thread says so mid-run): the steps it would still run are skipped by
    ansible; the first is its failure, the others are not steps it ran."""
    e = Engine("print('program')", SshOptions(control_path_dir="/cp", known_hosts="/kh"))
    running = e._running["a"] = Host("a")  # as a run holds it
    running.set_variable("hs_stop", False)
    e.stop("a", "deploy lock lost")
    assert running.get_vars()["hs_stop"] is True and (e.stopped("a"), e.stopped("b")) == ("deploy lock lost", None)
    hosts = {"a": HostRun(Connection("198.18.0.2"), {"install": {}, "config": {}, "service": {}}),
             "b": HostRun(Connection("198.18.0.3"), {"config": {}})}
    listener = Recorder()
    events = engine._Events(hosts, listener, {"a": "deploy lock lost"}, {})
    for step in ("install", "config", "service"):
        events.v2_runner_on_start(Named("a"), Named(step))
        events.v2_runner_on_skipped(Result(Named("a"), Named(step), {"skipped": True}))
    lost = Outcome(False, error="deploy lock lost")
    assert listener.events == [("started", "a", "install", None), ("finished", "a", "install", lost)]
    assert events.outcomes == {"a": {"install": lost}, "b": {}}



PROBED = '"missing": [], "systemd": false, "running": true'


@pytest.mark.parametrize("stdout, error", [
    ('{"stamp": ["wheels"], ' + PROBED + '}', "the host's answer does not fit: stamp: Input should be a valid "
     "dictionary"),
    ('{"stamp": {}, ' + PROBED + ', "token": {"a": 1}}', "the host's answer does not fit: token: Input should be a "
     "valid string"),
    ('{"stamp": {"wheels": "' + "w" * 300 + '"}, ' + PROBED + '}', "the host's answer does not fit: stamp.wheels: "
     "String should have at most 256 characters"),
    ('{"stamp": {}, ' + PROBED + ', "extra": 1}', "the host's answer does not fit: extra: Extra inputs are not "
     "permitted"),
    ('{"stamp": {}', "the host's answer is not JSON: JSONDecodeError"),
    ("[" * 100_000 + "]" * 100_000, "the host's answer is not JSON: RecursionError"),
    ("[]", "the host's answer does not fit: the answer: Input should be a valid dictionary or instance of "
     "ProbeReply"),
])
def test_a_host_answering_what_no_probe_answers_fails_its_probe_saying_so(stdout, error):
    """A hostile host's probe: before, its answer reached the plan, where a KeyError or TypeError ended the whole
    deploy (every host of the batch), or the callback failed and ansible only warned."""
    hosts = {"a": HostRun(Connection("198.18.0.2"), {"probe": {}}), "b": HostRun(Connection("198.18.0.3"),
                                                                                 {"probe": {}})}
    listener = Recorder()
    events = engine._Events(hosts, listener, {}, {"probe": tasks.ProbeReply})
    events.v2_runner_on_ok(Result(Named("a"), Named("probe"), {"stdout": stdout}))
    events.v2_runner_on_ok(Result(Named("b"), Named("probe"), {"stdout": '{"stamp": {"wheels": "w1"}, ' + PROBED +
                                                                          "}"}))
    assert events.outcomes["a"]["probe"] == Outcome(False, error=error)
    assert events.outcomes["b"]["probe"] == Outcome(True, {"stamp": {"wheels": "w1"}, "missing": [], "systemd": False,
                                                           "running": True, "token": None, "config_token": None,
                                                           "current": None, "current_version": None})


def test_an_answer_of_a_call_without_a_shape_is_still_a_json_object():
    hosts = {"a": HostRun(Connection("198.18.0.2"), {"files": {}})}
    events = engine._Events(hosts, Recorder(), {}, {"files": None})
    events.v2_runner_on_ok(Result(Named("a"), Named("files"), {"stdout": "[1]"}))
    assert events.outcomes["a"]["files"] == Outcome(False, error="the host's answer is not a JSON object")
