"""Reading a host's SSH host keys the way a deploy reaches the host (the deployer's own ssh), without
logging in: what `hs host add` records and shows by fingerprint for the operator to compare.

ssh is run with every authentication method off, so it only completes the key exchange, writes the
key the host proved it holds into a throw-away known_hosts file, and fails to log in.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from agentkit import sshkeys
from agentkit.errors import HostStackError
from agentkit.proc import run

OFF = ("BatchMode=yes", "PasswordAuthentication=no", "PubkeyAuthentication=no", "KbdInteractiveAuthentication=no",
       "GSSAPIAuthentication=no", "HostbasedAuthentication=no", "ControlMaster=no", "ControlPath=none",
       "StrictHostKeyChecking=accept-new", "GlobalKnownHostsFile=/dev/null", "HashKnownHosts=no")


class KeyScanError(HostStackError):
    code, status = "ssh_host_key_unread", 502


def scan(address: str, port: int, ssh_executable: str = "ssh", timeout: int = 10) -> list[str]:
    """The host key `address`:`port` presents (the type ssh negotiates), parsed."""
    with tempfile.TemporaryDirectory(prefix="hs-hostkey-") as tmp:
        known = Path(tmp) / "known_hosts"
        options = [a for o in (*OFF, f"UserKnownHostsFile={known}", f"ConnectTimeout={timeout}") for a in ("-o", o)]
        p = run([ssh_executable, *options, "-p", str(port), f"hoststack-keyscan@{address}", "true"],
                rcs=range(256), timeout=timeout + 10)
        lines = known.read_text().splitlines() if known.exists() else []
    keys = [sshkeys.parse(" ".join(line.split()[1:3])) for line in lines if line.strip()]
    if not keys:
        reason = (p.stderr.strip().splitlines() or ["no answer"])[-1]
        raise KeyScanError(f"no SSH host key read from {address}:{port}: {reason}")
    return keys
