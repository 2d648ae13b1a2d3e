"""ansible's ssh connection, except that ssh's own reason survives a login that fails under load, and that a host's
answer is read only up to `ANSWER_LIMIT` bytes.

With pipelining, ansible writes the module into ssh's stdin as soon as ssh starts. When the login
fails, ssh quits and the write meets a broken pipe. ansible then gives ssh 1 ms to have exited; if it
has, ansible reads its stderr ("Permission denied") and reports that; if not, it reports only
"Data could not be sent ...: Broken pipe". On a loaded machine ssh takes longer than 1 ms to exit
and the cause is lost. Here ssh gets `EXIT_GRACE` seconds, so the cause is ssh's in both cases.

A deploy target is not trusted, and ansible keeps whatever ssh prints until ssh exits (`_bare_run` adds each read
to what it has): a hostile host answering a step with gigabytes would have the controller (the coordinator's
deployer) hold them all. `_bare_run` has no hook for that, so while it runs, the `subprocess` it starts ssh with
is one whose pipes count what ansible reads (`_Capped`): past the limit ssh is killed and the step fails with
`AnswerTooLarge`.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import types
from collections.abc import Iterator
from typing import IO, Any

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.connection import ssh

DOCUMENTATION = ssh.DOCUMENTATION  # the same options, variables and defaults as ansible.builtin.ssh
EXIT_GRACE = 5.0  # seconds ssh gets to exit once it stopped reading its stdin
# bytes of stdout and stderr one ssh call may print. The largest real answer measured is 45 KB (the command module
# echoes the remote program twice; a control node's program is 12 KB longer; a status adds 10 lines of 500 at most)
ANSWER_LIMIT = 1 << 20
CHUNK = 1 << 16  # bytes read at once: ansible's own read() takes all there is, which a fast writer keeps refilling


class AnswerTooLarge(AnsibleError):
    """The host printed more than a step's answer can be: the step fails, the rest is not read."""


def exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether `process` ends within `timeout` seconds (its output stays unread meanwhile: ssh's is short)."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


class _Budget:
    """What one ssh process may still print, its stdout and stderr together."""

    def __init__(self, process: subprocess.Popen[bytes], limit: int):
        self.process, self.limit, self.left = process, limit, limit

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            with contextlib.suppress(OSError):
                self.process.kill()  # ssh stops relaying; the host's writes meet a closed channel
            self.process.wait()
            raise AnswerTooLarge(f"the host's answer is over {self.limit} bytes; the rest was not read")


class _Capped:
    """One of ssh's output pipes as ansible's `_bare_run` uses it (fileno, read after select, close), each read at
    most `CHUNK` bytes and counted against the process's budget."""

    def __init__(self, pipe: IO[bytes], budget: _Budget):
        self.pipe, self.budget = pipe, budget

    def fileno(self) -> int:
        return self.pipe.fileno()

    def read(self) -> bytes:
        chunk = os.read(self.pipe.fileno(), CHUNK)  # nothing was read through `pipe`: its buffer is empty
        self.budget.spend(len(chunk))
        return chunk

    def close(self) -> None:
        self.pipe.close()


class _CappedSubprocess(types.ModuleType):
    """`subprocess` whose Popen caps what is read from the process's stdout and stderr (`_Capped`)."""

    def __init__(self, limit: int):
        super().__init__("subprocess")
        self.limit = limit

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    def Popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:  # noqa: N802 (subprocess's name)
        p: subprocess.Popen[bytes] = subprocess.Popen(*args, **kwargs)
        budget = _Budget(p, self.limit)
        if p.stdout is not None and p.stderr is not None:
            p.stdout, p.stderr = _Capped(p.stdout, budget), _Capped(p.stderr, budget)  # type: ignore[assignment]
        return p


@contextlib.contextmanager
def capped(limit: int) -> Iterator[None]:
    """ansible's ssh plugin starts its processes with a Popen that reads at most `limit` bytes of each one's output.
    Safe as a worker runs one connection at a time, on one thread; only `_bare_run` starts a process meanwhile."""
    ssh.subprocess = _CappedSubprocess(limit)
    try:
        yield
    finally:
        ssh.subprocess = subprocess


class Connection(ssh.Connection):
    def _send_initial_data(self, fh: io.IOBase, in_data: bytes, ssh_process: subprocess.Popen[bytes]) -> None:
        try:
            super()._send_initial_data(fh, in_data, ssh_process)
        except AnsibleConnectionFailure:
            if not exited(ssh_process, EXIT_GRACE):
                raise
            # ssh quit: ansible goes on to read its stderr and reports why, as after a quick exit

    def _init_shm(self) -> dict[str, Any]:
        """ssh stays in its worker's process group, where ansible starts it in a session of its own when it logs in
        with a password (for an ssh older than 8.4, which asks a terminal rather than SSH_ASKPASS; a worker has none,
        ansible detached it): on Ctrl-C a worker signals its group and exits, and ssh, left running, kept its step's
        channel open (ansible had been waiting for its end) until the host finished the step."""
        kwargs = super()._init_shm()
        kwargs.pop("start_new_session", None)
        return kwargs

    def _bare_run(self, cmd: list[bytes], in_data: bytes | None, sudoable: bool = True,
                  checkrc: bool = True) -> tuple[int, bytes, bytes]:
        with capped(ANSWER_LIMIT):
            return super()._bare_run(cmd, in_data, sudoable, checkrc)
