"""A directory one process owns: a second copy of an agent on the host is told which process holds it."""

from __future__ import annotations

import os

import pytest

from agentkit.dirlock import DirectoryUnusable, held, hold


def test_a_second_holder_is_told_the_first_ones_pid_until_it_lets_go(tmp_path):
    state = tmp_path / "var" / "kvmagent"  # missing: made
    with held(state, "kvmagent"):
        assert (state / "lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(DirectoryUnusable) as refused:
            with held(state, "kvmagent"):
                pass
        assert str(refused.value) == (f"{state}: another kvmagent process (pid {os.getpid()}) uses it "
                                      f"(it holds {state}/lock)")
    with held(state, "kvmagent"):  # let go: free again
        pass


def test_a_process_that_cannot_hold_its_directory_ends_with_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as ended:
        hold(tmp_path / "file" / "state", "consoleproxy")
    assert ended.value.code == f"consoleproxy: {tmp_path}/file/state: Not a directory"
    with held(tmp_path, "consoleproxy"), pytest.raises(SystemExit) as ended:
        hold(tmp_path, "consoleproxy")
    assert ended.value.code == (f"consoleproxy: {tmp_path}: another consoleproxy process (pid {os.getpid()}) "
                                f"uses it (it holds {tmp_path}/lock)")
