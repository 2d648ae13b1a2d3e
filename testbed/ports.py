"""Free loopback TCP ports for the processes a run starts.

A port from `bind(port 0)` lies in the kernel's ephemeral range: between our check and the server's own
bind, any process's next outgoing connection may take it as its source port, and the next `bind(0)` may
hand out the same port again (one etcd cluster in a thousand failed to start, "address in use"). Ports
here come from below the ephemeral range, where no outgoing connection goes, and each is reserved until
its process exits by a lock on the port's byte of one shared file: parallel test workers and concurrent
runs never draw the same one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
from pathlib import Path

LOCK_FILE = Path("/tmp/hoststack-ports.lock")  # noqa: S108 - shared by every run on the machine by design
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10000
# Fixed ports the test bed's own servers listen on inside the namespaces it makes, where a port free here may not
# be: libvirtd's TCP and TLS (a host's agent drew 16509 once and could not listen beside its libvirtd).
FIXED = frozenset({16509, 16514})


class _Pool:
    """The ports this process has reserved, and where to look for the next one."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.taken: set[int] = set()
        self.cursor: int | None = None

    def lock_fd(self) -> int:
        while self.fd is None:
            try:  # O_CREAT only with O_EXCL: fs.protected_regular refuses it on another user's file in /tmp
                self.fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
                os.fchmod(self.fd, 0o666)  # the unit tests' user and root's functional tests share it
            except FileExistsError:
                with contextlib.suppress(FileNotFoundError):
                    self.fd = os.open(LOCK_FILE, os.O_RDWR)
        return self.fd

    def reserve(self, port: int) -> bool:
        """Ours alone from now until this process exits, and nothing listens on it (nor will in a namespace)."""
        if port in self.taken or port in FIXED:
            return False
        try:
            fcntl.lockf(self.lock_fd(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
        except OSError:
            return False  # another process holds it
        self.taken.add(port)  # held even when bound below: then someone outside our runs uses it
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True


_pool = _Pool()


def port_range() -> range:
    """The larger stretch of ports outside the kernel's ephemeral range (below it on a default kernel)."""
    first, last = (int(n) for n in EPHEMERAL.read_text().split())
    return max(range(LOWEST, first), range(last + 1, 65536), key=len)


def free_port() -> int:
    ports = port_range()
    if _pool.cursor is None:
        _pool.cursor = random.randrange(len(ports))  # noqa: S311 - spreads concurrent runs, not a secret
    for _ in range(len(ports)):
        port = ports[_pool.cursor % len(ports)]
        _pool.cursor += 1
        if _pool.reserve(port):
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}: all reserved or in use")
