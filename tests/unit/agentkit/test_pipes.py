"""Output to a pipe whose reader went away ends the process quietly with SIGPIPE's status."""

from __future__ import annotations

import os

import pytest

from agentkit.pipes import emit


def test_a_closed_pipe_is_a_quiet_exit_141(monkeypatch: pytest.MonkeyPatch):
    read, write = os.pipe()
    os.close(read)  # `| head -1` after its line
    with open(write, "w") as out:
        monkeypatch.setattr("sys.stdout", out)
        with pytest.raises(SystemExit) as e:
            emit("row\n" * 100_000)
        assert e.value.code == 141
        out.write("what the interpreter flushes at exit goes nowhere now")
        out.flush()  # no second BrokenPipeError


def test_text_is_printed_with_a_newline(capsys: pytest.CaptureFixture[str]):
    emit("a table")
    assert capsys.readouterr().out == "a table\n"
