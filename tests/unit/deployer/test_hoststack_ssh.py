"""The ssh connection plugin waits for an ssh that quit while ansible wrote the module, so ssh's reason is kept."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import threading

import pytest
from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection import ssh

from deployer.connection_plugins import hoststack_ssh


class FakeSsh:
    """An ssh process as `_send_initial_data` sees it: it ends after `exits_after` s, or never (None)."""

    def __init__(self, exits_after: float | None):
        self.exits_after = exits_after
        self.returncode: int | None = None
        self.waited: list[float] = []

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float) -> int:
        self.waited.append(timeout)
        if self.exits_after is None or self.exits_after > timeout:
            raise subprocess.TimeoutExpired(["ssh"], timeout)
        self.returncode = 255
        return self.returncode


def connection() -> hoststack_ssh.Connection:
    conn = hoststack_ssh.Connection.__new__(hoststack_ssh.Connection)  # only `host` is read on this path
    conn.host = "198.18.0.5"
    return conn


def quit_ssh_stdin() -> io.BufferedWriter:
    """The write end of a pipe whose reader (ssh) is gone: writing fails with a broken pipe."""
    r, w = os.pipe()
    os.close(r)
    return os.fdopen(w, "wb")


def test_an_ssh_that_quits_late_is_waited_for_and_its_stderr_read_next():
    ssh = FakeSsh(exits_after=0.5)
    connection()._send_initial_data(quit_ssh_stdin(), b"x" * 200_000, ssh)
    assert ssh.returncode == 255 and ssh.waited == [hoststack_ssh.EXIT_GRACE]


def test_an_ssh_that_keeps_running_without_reading_is_a_connection_failure():
    ssh = FakeSsh(exits_after=None)
    with pytest.raises(AnsibleConnectionFailure, match="Data could not be sent to remote host '198.18.0.5'"):
        connection()._send_initial_data(quit_ssh_stdin(), b"x" * 200_000, ssh)
    assert ssh.waited == [hoststack_ssh.EXIT_GRACE]


def test_data_an_ssh_reads_is_sent_whole_without_waiting():
    r, w = os.pipe()
    ssh = FakeSsh(exits_after=None)
    with os.fdopen(r, "rb") as reader:
        connection()._send_initial_data(os.fdopen(w, "wb"), b"module", ssh)
        assert reader.read() == b"module"
    assert ssh.waited == []


class FakeProcess:
    """The ssh process whose output is read: killed once it printed too much."""

    def __init__(self) -> None:
        self.killed = self.waited = False

    def kill(self) -> None:
        self.killed = True

    def wait(self) -> int:
        self.waited = True
        return -9


def capped_pipes(limit: int) -> tuple[FakeProcess, list[hoststack_ssh._Capped], list[int]]:
    """ssh's stdout and stderr as ansible reads them under a budget of `limit` bytes, and their write ends."""
    process, pipes, writers = FakeProcess(), [], []
    budget = hoststack_ssh._Budget(process, limit)  # type: ignore[arg-type]
    for _ in range(2):
        r, w = os.pipe()
        pipes.append(hoststack_ssh._Capped(os.fdopen(r, "rb"), budget))
        writers.append(w)
    return process, pipes, writers


def test_what_ssh_prints_is_read_until_stdout_and_stderr_together_pass_the_limit():
    process, (out, err), (w_out, w_err) = capped_pipes(100)
    os.write(w_out, b"o" * 60)
    os.write(w_err, b"e" * 40)
    assert (out.read(), err.read()) == (b"o" * 60, b"e" * 40) and not process.killed
    os.write(w_out, b"!")
    with pytest.raises(hoststack_ssh.AnswerTooLarge, match="^the host's answer is over 100 bytes; the rest was not"):
        out.read()
    assert process.killed and process.waited  # ssh relays no more
    out.close(), err.close(), os.close(w_out), os.close(w_err)


def test_the_end_of_sshs_output_reads_as_ansible_expects_it():
    _, (out, err), (w_out, w_err) = capped_pipes(100)
    os.close(w_out)
    assert out.read() == b""
    out.close(), err.close(), os.close(w_err)


def test_one_read_takes_a_chunk_however_much_is_waiting():
    _, (out, err), (w_out, w_err) = capped_pipes(1 << 30)

    def flood() -> None:
        with contextlib.suppress(BrokenPipeError):
            os.write(w_out, b"x" * (hoststack_ssh.CHUNK * 3))  # more than the pipe holds: blocks until read

    writer = threading.Thread(target=flood, daemon=True)
    writer.start()
    assert 0 < len(out.read()) <= hoststack_ssh.CHUNK
    out.close(), err.close()  # the writer meets a broken pipe
    writer.join(5)
    os.close(w_out), os.close(w_err)


def test_ssh_is_started_capped_only_while_the_connection_runs_it():
    with pytest.raises(RuntimeError), hoststack_ssh.capped(10):
        assert isinstance(ssh.subprocess, hoststack_ssh._CappedSubprocess)
        assert (ssh.subprocess.PIPE, ssh.subprocess.TimeoutExpired) == (subprocess.PIPE, subprocess.TimeoutExpired)
        raise RuntimeError
    assert ssh.subprocess is subprocess
