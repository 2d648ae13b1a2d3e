"""agentkit.proc's error (running commands is tested in tests/functional): it carries the cause, not secrets."""

from __future__ import annotations

from agentkit.proc import ProcessError


def test_the_error_names_the_command_its_status_and_stderr():
    e = ProcessError(["ip", "link", "add"], 2, "", "RTNETLINK answers: File exists\n")
    assert str(e) == "'ip link add' exited 2: RTNETLINK answers: File exists"
    assert (e.argv, e.rc) == (["ip", "link", "add"], 2)


def test_stdout_stands_in_for_an_empty_stderr_and_both_are_truncated_from_the_front():
    e = ProcessError(["x"], 1, "a" * 3000 + "the end", "")
    assert str(e).endswith("the end") and len(e.stdout) == 2000


def test_a_logstring_hides_the_arguments():
    e = ProcessError(["rbd", "--key", "SECRET"], 1, "", "denied", logstring="rbd --key ***")
    assert "SECRET" not in str(e) and str(e) == "'rbd --key ***' exited 1: denied"


def test_a_process_a_signal_ended_says_which():
    """A unit's stop signals its children too: "exited -15" read as the command's own failure."""
    e = ProcessError(["python", "-m", "deployer"], -15, "", "", logstring="python -m deployer")
    assert str(e) == "'python -m deployer' was killed by SIGTERM" and e.rc == -15
    assert str(ProcessError(["x"], -99, "", "out")) == "'x' was killed by signal 99: out"
