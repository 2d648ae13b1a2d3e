"""Who installs, upgrades or restores a control node now: one of them at a time (the lease, deployer.remote.node).

An install is many processes on the node, one per step over SSH: it holds the lease between them as a file with
an expiry that each step renews. A restore runs on the node in one process, which holds it until it ends.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coordinator.ctl import layout
from coordinator.ctl.errors import Busy
from deployer.remote import host as remote_host
from deployer.remote import node as remote_node


def holder(what: str, local: bool) -> dict[str, Any]:
    """This process as the lease names it (`local`: a process of the node, whose end frees it at once)."""
    me = os.getpid()
    return {"id": secrets.token_hex(8), "what": what, "host": socket.gethostname(), "pid": me, "local": local,
            "start": remote_node.process_start(me) if local else None}


@contextlib.contextmanager
def held(what: str, lock: Path | None = None) -> Iterator[None]:
    """The node's lease for this process of the node (a restore) while the block runs, free again once it ends
    however it ends (its process gone); Busy naming the holder when another has it, nothing changed."""
    lease = {"lock": str(lock or layout.LOCK), "holder": holder(what, local=True), "first": True, "ttl": None}
    try:
        remote_node.take_lease(lease)
    except remote_host.Fail as e:
        raise Busy(str(e)) from None
    try:
        yield
    finally:
        remote_node.release_lease(lease)
