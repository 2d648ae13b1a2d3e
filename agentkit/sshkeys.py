"""SSH host public keys as HostStack records them: `<type> <base64>` lines, and their fingerprints.

The coordinator keeps each host's keys (recorded at `hs host add`, shown by fingerprint, or given by the
operator); every deploy connects with exactly those keys known and strict checking, so no deployer ever
trusts a key on first use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
         "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
_LINE = re.compile(r"^(\S+)\s+([A-Za-z0-9+/]+={0,2})(\s.*)?$")


def parse(text: str) -> str:
    """`text` (`<type> <base64> [comment]`) as `<type> <base64>`; ValueError naming what is wrong."""
    m = _LINE.match(text.strip())
    if not m:
        raise ValueError("an SSH host key is '<type> <base64>', as in /etc/ssh/ssh_host_*_key.pub")
    kind, blob = m.group(1), m.group(2)
    if kind not in TYPES:
        raise ValueError(f"unknown SSH key type {kind!r} (known: {', '.join(TYPES)})")
    try:
        raw = base64.b64decode(blob, validate=True)
    except binascii.Error:
        raise ValueError("the SSH host key's base64 does not decode") from None
    if raw[4:4 + len(kind)] != kind.encode():  # the blob starts with its own type, length-prefixed
        raise ValueError(f"the SSH host key's data is not of type {kind}")
    return f"{kind} {blob}"


def fingerprint(key: str) -> str:
    """OpenSSH's `SHA256:` fingerprint of a parsed key (what `ssh-keygen -lf` and ssh's prompts show)."""
    raw = base64.b64decode(key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def known_hosts(address: str, port: int, keys: list[str]) -> str:
    """known_hosts lines that make `keys` the only ones ssh accepts for `address`:`port`."""
    name = address if port == 22 else f"[{address}]:{port}"
    return "".join(f"{name} {k}\n" for k in keys)


@contextmanager
def known_hosts_file(hosts: Iterable[tuple[str, int, Sequence[str]]]) -> Iterator[str]:
    """A throw-away known_hosts file for ssh's `UserKnownHostsFile`: each (address, port, keys) with only those
    keys. In the temporary directory, removed on exit; a process killed before leaves it where it goes away
    (a unit's private /tmp goes with the unit), not in a cache that stays."""
    with tempfile.NamedTemporaryFile("w", prefix="hoststack-known_hosts-") as f:
        f.write("".join(known_hosts(address, port, list(keys)) for address, port, keys in hosts))
        f.flush()
        yield f.name
