"""`python -m deployer` as the coordinator calls it: request on stdin, one JSON answer on stdout, exit status."""

from __future__ import annotations

import io
import json

import pytest

from agentkit import logs
from deployer import __main__ as child


@pytest.mark.parametrize("request_text, code, answer", [
    ('{"agent": "kvmagent", "targets": [], "coordinator_url": "http://c"}', 0, {}),
    ('{"agent": "nope", "targets": [], "coordinator_url": "http://c"}', 2,
     {"error": "InvalidRequest: unknown agent 'nope'; known: kvmagent, cephagent, consoleproxy, imagestore"}),
    ('{"agent": "kvmagent", "coordinator_url": "http://c"}', 2, {"error": "KeyError: 'targets'"}),
    ('{"agent": "kvmagent", "targets": [{"name": "a"}], "coordinator_url": "http://c"}', 2,
     {"error": "TypeError: Target.__init__() missing 3 required positional arguments: 'address', 'host_uuid', "
               "and 'host_token'"}),
    ("{", 2, {"error": "JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"}),
])
def test_one_json_answer_and_the_exit_status(monkeypatch, capsys, request_text, code, answer):
    monkeypatch.setattr(logs, "setup", lambda level="INFO": None)  # keep pytest's log capture
    monkeypatch.setattr(child.sys, "stdin", io.StringIO(request_text))
    with pytest.raises(SystemExit) as e:
        child.main()
    assert (e.value.code, json.loads(capsys.readouterr().out)) == (code, answer)
