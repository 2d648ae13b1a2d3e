"""SSH public keys as HostStack takes them: hosts' `<type> <base64>` lines and their fingerprints, and the
keys a VM's `sshkey::` tags give its guest.

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

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
         "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
_LINE = re.compile(r"^(\S+)\s+([A-Za-z0-9+/]+={0,2})(\s.*)?$")
AUTHORIZED_KEY_MAX = 8192  # characters of a guest's key line: a 16384-bit RSA key (OpenSSH's largest) is ~2.8k


def parse(text: str) -> str:
    """`text` (`<type> <base64> [comment]`) as `<type> <base64>`; ValueError naming what is wrong."""
    m = _LINE.match(text.strip())
    if not m:
        raise ValueError("an SSH host key is '<type> <base64>', as in /etc/ssh/ssh_host_*_key.pub")
    kind, blob = m.group(1), m.group(2)
    _known(kind)
    try:
        raw = base64.b64decode(blob, validate=True)
    except binascii.Error:
        raise ValueError("the SSH host key's base64 does not decode") from None
    if raw[4:4 + len(kind)] != kind.encode():  # the blob starts with its own type, length-prefixed
        raise ValueError(f"the SSH host key's data is not of type {kind}")
    return f"{kind} {blob}"


def authorized_key(text: str) -> str:
    """`text` as a line of a guest's authorized_keys (`<type> <base64> [comment]`, stripped): one line, of a type
    in TYPES whose data is a key of that type (cryptography reads it); ValueError naming what is wrong. cloud-init
    writes what it is served, and the metadata's `public-keys` puts one key a line, so a line break would be a
    second key."""
    line = text.strip()
    if len(line) > AUTHORIZED_KEY_MAX:
        raise ValueError(f"an SSH public key line holds at most {AUTHORIZED_KEY_MAX} characters, this one {len(line)}")
    if not line or not line.replace("\t", " ").isprintable():
        raise ValueError("an SSH public key is one line of printable text: '<type> <base64> [comment]'")
    kind = line.split(maxsplit=1)[0]
    _known(kind)
    try:
        load_ssh_public_key(line.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"not an SSH public key of type {kind}: '<type> <base64> [comment]', as in "
                         "~/.ssh/id_*.pub") from None
    return line


def _known(kind: str) -> None:
    if kind not in TYPES:
        raise ValueError(f"unknown SSH key type {kind[:40]!r} (known: {', '.join(TYPES)})")


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
