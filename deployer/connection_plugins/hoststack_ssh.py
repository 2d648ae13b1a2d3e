"""ansible's ssh connection, except that ssh's own reason survives a login that fails under load.

With pipelining, ansible writes the module into ssh's stdin as soon as ssh starts. When the login
fails, ssh quits and the write meets a broken pipe. ansible then gives ssh 1 ms to have exited; if it
has, ansible reads its stderr ("Permission denied") and reports that; if not, it reports only
"Data could not be sent ...: Broken pipe". On a loaded machine ssh takes longer than 1 ms to exit
and the cause is lost. Here ssh gets `EXIT_GRACE` seconds, so the cause is ssh's in both cases.
"""

from __future__ import annotations

import io
import subprocess

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection import ssh

DOCUMENTATION = ssh.DOCUMENTATION  # the same options, variables and defaults as ansible.builtin.ssh
EXIT_GRACE = 5.0  # seconds ssh gets to exit once it stopped reading its stdin


def exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether `process` ends within `timeout` seconds (its output stays unread meanwhile: ssh's is short)."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


class Connection(ssh.Connection):
    def _send_initial_data(self, fh: io.IOBase, in_data: bytes, ssh_process: subprocess.Popen[bytes]) -> None:
        try:
            super()._send_initial_data(fh, in_data, ssh_process)
        except AnsibleConnectionFailure:
            if not exited(ssh_process, EXIT_GRACE):
                raise
            # ssh quit: ansible goes on to read its stderr and reports why, as after a quick exit
