"""Sockets inside network namespaces without forking.

pyroute2 makes a namespace's socket (also for `AsyncIPRoute(netns=...)`) in a forked child and waits
for it with a blocking poll. In a process with threads (libvirt's pool, our own) a forked child can
deadlock on a lock another thread held at fork time, and the wait stalls the event loop. Here a
short-lived thread enters the namespace (setns affects only the calling thread) and makes the
socket, which keeps its namespace for life. `install()` makes pyroute2 use it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pyroute2.config
from pyroute2 import netns as pr_netns


def netns_socket(netns: str, family: int, type_: int, setup: Callable[[socket.socket], None] | None = None,
                 proto: int = 0) -> socket.socket:
    """A socket created (and set up: options, bind) inside `netns`; usable from any thread afterwards."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            pr_netns.setns(netns, flags=0)
            sock = socket.socket(family, type_, proto)
            try:
                if setup is not None:
                    setup(sock)
            except BaseException:
                sock.close()
                raise
            made.append(sock)
        except BaseException as e:  # handed to the caller's thread
            failed.append(e)

    thread = threading.Thread(target=work, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def _create_socket(netns: str | None = None, family: int = socket.AF_INET, socket_type: int = socket.SOCK_STREAM,
                   proto: int = 0, fileno: int | None = None, **_ignored: object) -> socket.socket:
    """pyroute2.netns.create_socket's contract, without the fork."""
    if fileno is not None:
        return socket.socket(fileno=fileno)
    if netns is None:
        return socket.socket(family, socket_type, proto)
    return netns_socket(netns, family, socket_type, proto=proto)


def install() -> None:
    """Route pyroute2's namespace sockets through `netns_socket` (call once, before any handle opens).

    Should pyroute2 still fork somewhere, its child must not signal: the SIGTERM it sends a child
    lands on the asyncio wakeup fd the child shares with us and runs our own SIGTERM handler.
    """
    pr_netns.create_socket = _create_socket
    pyroute2.config.disable_mp_signal = True
