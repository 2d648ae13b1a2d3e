"""What the image store counts as it works, for /metrics: image bytes received and served, transfers running,
tickets refused. Read when scraped; every series has a fixed label set, shown from the start with its zeros
so that a rate has a beginning.

A download's worker thread adds the bytes it writes as it writes them (hence the lock); everything else is
counted on the event loop.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Literal, get_args

from agentkit.metrics import Registry
from imagestore.tickets import Op, Reason

Received = Literal["download", "upload"]  # from an image's source URL, from the host sending it
Transfer = Literal["download", "upload", "read"]  # a read: a host or cephagent fetching an image's data


class Tally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.served = 0
        self.running: Counter[str] = Counter()
        self.refused: Counter[tuple[str, str]] = Counter()

    def receive(self, kind: Received, size: int) -> None:
        """`size` bytes of an image arrived (called from a download's worker thread too)."""
        with self._lock:
            self.received[kind] += size

    @contextlib.contextmanager
    def transfer(self, kind: Transfer) -> Iterator[None]:
        """One transfer of `kind` running while the block runs."""
        self.running[kind] += 1
        try:
            yield
        finally:
            self.running[kind] -= 1

    def register(self, registry: Registry) -> None:
        """The tally as series of `registry`."""
        registry.gauge("hoststack_imagestore_transfers", "transfers running: downloads holding a slot, uploads "
                       "arriving, reads of image data by hosts", lambda: [((k,), self.running[k])
                                                                           for k in get_args(Transfer)], ("kind",))
        registry.count("hoststack_imagestore_received_bytes_total", "image bytes received (downloaded from "
                       "sources, uploaded by hosts), running transfers' included",
                       lambda: [((k,), self.received[k]) for k in get_args(Received)], ("kind",))
        registry.count("hoststack_imagestore_served_bytes_total", "image bytes served to hosts (answers sent whole)",
                       lambda: [((), self.served)])
        registry.count("hoststack_imagestore_tickets_refused_total", "read and upload tickets refused, by why",
                       lambda: [(k, self.refused[k]) for k in itertools.product(get_args(Op), get_args(Reason))],
                       ("op", "reason"))
