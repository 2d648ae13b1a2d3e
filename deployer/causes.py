"""One line naming why a step failed, from whatever ssh, ansible or the host said.

Remote steps already report one-line causes ("apt: package x not found"); this module turns the rest
(ssh client errors, ansible's module failures) into the same form, never a dump.
"""

from __future__ import annotations

import re

from deployer.model import Outcome

SSH = [
    ("Connection refused", "ssh: connection refused"),
    ("No route to host", "ssh: no route to host"),
    ("Connection timed out", "ssh: connection timed out"),
    ("timed out", "ssh: connection timed out"),
    ("Could not resolve hostname", "ssh: unknown host name"),
    ("Network is unreachable", "ssh: network unreachable"),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "ssh: the host's key is not the one recorded at the coordinator "
     "(reinstalled? `hs host ssh-host-key HOST`; else another machine answers at its address)"),
    ("Host key verification failed", "ssh: the host's key is not one recorded at the coordinator"),
    ("Permission denied", "ssh: authentication failed"),
    ("Invalid/incorrect password", "ssh: authentication failed"),
    ("Authentication failed", "ssh: authentication failed"),
    # ssh stopped reading the module ansible wrote and did not exit (a quick exit leaves its reason above)
    ("Broken pipe", "ssh: connection closed while the request was sent"),
]
PREFIXES = re.compile(r"^(Task failed: |Module failed: |Failed to connect to the host via ssh: )+")
NO_SPACE = re.compile(r"No space left on device|\[Errno 28\]")
REPLACE = re.compile(r"Failed to replace '([^']+)'")


def cause(outcome: Outcome, dest: str | None = None) -> str:
    """The operator-facing cause; `dest` names the file a transfer step was writing."""
    text = outcome.error.strip()
    if outcome.unreachable:
        for needle, message in SSH:
            if needle in text:
                return message
    if NO_SPACE.search(text):
        m = REPLACE.search(text)
        path = m.group(1) if m else dest or "?"
        return f"disk full: {path.rsplit('/', 1)[0] or '/'}"
    if "python3: not found" in text or "No such file or directory: b'/usr/bin/python3'" in text:
        return "python3 is not installed on the host"
    first = PREFIXES.sub("", text).splitlines()[0] if text else "failed without a message"
    return ("ssh: " if outcome.unreachable else "") + first[:240]
