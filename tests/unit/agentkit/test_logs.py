"""agentkit.logs: one JSON object per line, with the record's fields and traceback; noisy libraries quieted."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from agentkit import logs


def test_a_record_is_one_json_line_with_its_fields():
    r = logging.LogRecord("hs.test", logging.WARNING, __file__, 1, "vm %s is %s", ("v1", "Running"), None)
    r.fields = {"vm": "v1", "rev": 7}
    line = logs.JsonFormatter().format(r)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc.pop("ts") > 0
    assert doc == {"level": "warning", "logger": "hs.test", "msg": "vm v1 is Running", "vm": "v1", "rev": 7}


def test_a_traceback_is_kept_in_the_same_line():
    try:
        raise KeyError("bug")
    except KeyError:
        r = logging.LogRecord("hs.test", logging.ERROR, __file__, 1, "crashed", (), sys.exc_info())
    line = logs.JsonFormatter().format(r)
    assert "\n" not in line and "KeyError: 'bug'" in json.loads(line)["exc"]


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in logs.QUIET})
    yield root
    root.handlers[:], _, quiet = saved
    root.setLevel(saved[1])
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)


def test_setup_writes_json_to_stderr_and_quiets_chatty_libraries(root, capsys):
    logs.setup("debug")
    assert root.level == logging.DEBUG and len(root.handlers) == 1
    assert logging.getLogger("pyroute2").level == logging.INFO
    logging.getLogger("hs.test").debug("hello %d", 1)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]  # other threads may log too
    assert [(d["logger"], d["msg"]) for d in lines if d["logger"] == "hs.test"] == [("hs.test", "hello 1")]
    logs.setup("WARNING")
    assert logging.getLogger("aiohttp.access").level == logging.WARNING


def test_a_clients_malformed_http_is_one_warning_line_without_traceback():
    from aiohttp.http_exceptions import BadHttpMessage
    try:
        raise BadHttpMessage("Invalid header value char")
    except BadHttpMessage:
        r = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                              ("127.0.0.1",), sys.exc_info())
    assert logs.MalformedRequests().filter(r)
    doc = json.loads(logs.JsonFormatter().format(r))
    assert doc["level"] == "warning" and "exc" not in doc
    assert doc["msg"] == "Error handling request from 127.0.0.1: 400 Invalid header value char"
    try:
        raise KeyError("bug")
    except KeyError:
        bug = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (),
                                sys.exc_info())
    assert logs.MalformedRequests().filter(bug) and bug.exc_info is not None  # a bug keeps its traceback
