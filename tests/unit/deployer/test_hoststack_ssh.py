"""The ssh connection plugin waits for an ssh that quit while ansible wrote the module, so ssh's reason is kept."""

from __future__ import annotations

import io
import os
import subprocess

import pytest
from ansible.errors import AnsibleConnectionFailure

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
