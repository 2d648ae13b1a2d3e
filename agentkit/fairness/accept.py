"""Accepting connections (a guest's, an API client's) without spinning when the process is out of descriptors.

When `accept()` fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) the listening socket
stays readable: retrying at once spins the event loop (one such loop wrote 1.3 million log lines in
40 s), and not accepting leaves every newcomer, the victim's too, waiting in the backlog behind the
attacker's. `Acceptor` counts the failure, logs it (rate-limited) and asks its owner to shed guest
connections (the idlest of the heaviest source first): each descriptor freed takes the next connection
from the backlog, so the backlog keeps moving and the heaviest guest pays. Only when there is nothing
left to shed does it stop watching the socket, for a backoff that doubles up to a second.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections import Counter
from collections.abc import Callable

from agentkit.fairness.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
ACCEPTS = 64  # connections accepted per readiness of the listening socket
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
SHED = 4  # connections closed to get descriptors back after each failure
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ratelog = RateLimitedLog(log)

Accepted = Callable[[socket.socket, str | None], None]  # (connected socket, peer address)
Shed = Callable[[int], int]  # close up to n guest connections; how many were closed


class Acceptor:
    """Watches a listening socket on the running loop; `stats["accept_errors"]` counts failed accepts."""

    def __init__(self, listener: socket.socket, accepted: Accepted, stats: Counter[str], name: str,
                 shed: Shed | None = None):
        self.listener = listener
        self._accepted = accepted
        self._stats = stats
        self._name = name
        self._shed = shed
        self._loop = asyncio.get_running_loop()
        self._backoff = BACKOFF_MIN
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop.add_reader(self.listener.fileno(), self._readable)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        elif self.listener.fileno() >= 0:
            self._loop.remove_reader(self.listener.fileno())
        self.listener.close()

    def _readable(self) -> None:
        for _ in range(ACCEPTS):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno not in _EXHAUSTED:  # the peer gave up meanwhile (ECONNABORTED, EPROTO...)
                    continue
                self._stats["accept_errors"] += 1
                _ratelog.log(logging.ERROR, (self._name, e.errno), "accept failed: %s", e,
                             fields={"site": self._name})
                if self._shed is not None and self._shed(SHED):  # descriptors freed: the backlog moves on
                    continue
                self._back_off()
                return
            self._backoff = BACKOFF_MIN
            self._accepted(sock, peer[0] if peer else None)

    def _back_off(self) -> None:
        self._loop.remove_reader(self.listener.fileno())
        self._timer = self._loop.call_later(self._backoff, self._resume)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _resume(self) -> None:
        self._timer = None
        self._loop.add_reader(self.listener.fileno(), self._readable)
