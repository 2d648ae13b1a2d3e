"""deployer.causes: whatever ssh or ansible said becomes one line naming the cause."""

from __future__ import annotations

import pytest

from deployer.causes import cause
from deployer.model import Outcome

REFUSED = ('Task failed: Data could not be sent to remote host "198.18.0.4". Make sure this host can be reached '
           'over ssh: ssh: connect to host 198.18.0.4 port 22: Connection refused')
DENIED = ("Task failed: Data could not be sent to remote host \"198.18.0.5\". Make sure this host can be reached "
          "over ssh: Warning: Permanently added '198.18.0.5' (ED25519) to the list of known hosts.\r\n"
          "root@198.18.0.5: Permission denied (password).")
STUCK = ("Data could not be sent to remote host '198.18.0.6'. Make sure this host can be reached over SSH: "
         "[Errno 32] Broken pipe")
ENOSPC = ("Task failed: Module failed: Failed to replace '/var/tmp/big.tar' with b'/root/.ansible/tmp/x/.source.tar':"
          " [Errno 28] No space left on device: b'/root/.ansible/tmp/x/.source.tar' -> b'/var/tmp/.ansible_tmpbig.tar'")


@pytest.mark.parametrize("outcome, want", [
    (Outcome(ok=False, error=REFUSED, unreachable=True), "ssh: connection refused"),
    (Outcome(ok=False, error=DENIED, unreachable=True), "ssh: authentication failed"),
    (Outcome(ok=False, error=STUCK, unreachable=True), "ssh: connection closed while the request was sent"),
    (Outcome(ok=False, error="ssh: connect to host x port 22: No route to host", unreachable=True),
     "ssh: no route to host"),
    (Outcome(ok=False, error="@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@", unreachable=True),
     "ssh: the host's key is not the one recorded at the coordinator (reinstalled? `hs host ssh-host-key HOST`; "
     "else another machine answers at its address)"),
    (Outcome(ok=False, error=ENOSPC), "disk full: /var/tmp"),
    (Outcome(ok=False, error="apt: package qemu-system-x86 not found"), "apt: package qemu-system-x86 not found"),
    (Outcome(ok=False, error="Task failed: Module failed: /bin/sh: 1: /usr/bin/python3: not found"),
     "python3 is not installed on the host"),
    (Outcome(ok=False, error="Task failed: Module failed: something odd\nTraceback ...\n  more"),
     "something odd"),
])
def test_cause_is_one_line(outcome, want):
    assert cause(outcome) == want


def test_disk_full_without_a_path_names_the_destination():
    assert cause(Outcome(ok=False, error="write error: No space left on device"), "/var/tmp/w.tar") == \
        "disk full: /var/tmp"
