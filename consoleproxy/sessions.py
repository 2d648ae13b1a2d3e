"""The console connections a proxy has open and its tally of them: counted for /health and /metrics (opened,
refused by reason, bytes relayed each way), closed (1001) when the proxy stops.

Every series has a fixed label set: `kind` one of the console kinds, `reason` the code of the refusal as
the browser is told it (`REASONS`), `direction` up (browser to console) or down (console to browser). All
of them are shown from the start, zeros too, so that a rate has a beginning.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

from aiohttp import WSCloseCode

from agentkit.consoles import KINDS
from agentkit.errors import HostStackError
from agentkit.metrics import LabelValues, Registry, every
from agentkit.relay import Close, WsPipe
from consoleproxy.errors import (
    ConsoleUnreachable,
    CoordinatorRefused,
    CoordinatorUnavailable,
    TokenExpired,
    TokenMismatch,
    TokenMissing,
    TokenUnknown,
    TooManyFailedTokens,
    TooManySessions,
    TooManyVmSessions,
)

REFUSED_BY_COORDINATOR = "coordinator_refused"  # its own 4xx, passed on with its code (`console_gone`, ...)
REASONS = (*(e.code for e in (TokenMissing, TokenUnknown, TokenExpired, TokenMismatch, TooManySessions,
                              TooManyVmSessions, TooManyFailedTokens, CoordinatorUnavailable, ConsoleUnreachable)),
           REFUSED_BY_COORDINATOR)
# Sessions one token may have open at once: as many connections as `hs vm console --listen` keeps open (its
# limit; a SPICE client's channels are a connection each). Every session is a connection to the VM's console
# at its host (qemu keeps a copy of the screen for each VNC client), so a token's sessions are bounded.
PER_TOKEN = 32
DIRECTIONS = ("up", "down")  # what `relay` counts as a → b (browser → tunnel) and b → a
STOPPING = Close(WSCloseCode.GOING_AWAY, "console proxy stopping")


def reason(e: HostStackError) -> str:
    """The `reason` label of a refusal."""
    return REFUSED_BY_COORDINATOR if isinstance(e, CoordinatorRefused) else e.code


class Sessions:
    def __init__(self, per_vm: int) -> None:
        """`per_vm`: the sessions one VM may have open at once, whatever their tokens and kinds."""
        self.per_vm = per_vm
        self._open: dict[WsPipe, tuple[str, list[int]]] = {}  # browser -> kind, bytes [up, down] so far
        self.opened: Counter[LabelValues] = Counter()  # by kind
        self.refused: Counter[LabelValues] = Counter()  # by kind and reason
        self._ended: Counter[LabelValues] = Counter()  # bytes of the sessions that ended, by kind and direction
        self._claimed: Counter[tuple[str, str]] = Counter()  # sessions open or opening, by ("token", token), ("vm", vm)

    @contextlib.contextmanager
    def track(self, browser: WsPipe, kind: str) -> Iterator[list[int]]:
        """Count `browser` as an open `kind` console while the block runs; the block's relay counts the bytes
        it moves in the list given (`agentkit.relay.relay`'s `moved`)."""
        moved = [0, 0]
        self._open[browser] = (kind, moved)
        self.opened[(kind,)] += 1
        try:
            yield moved
        finally:
            del self._open[browser]
            self._ended.update({(kind, d): n for d, n in zip(DIRECTIONS, moved, strict=True)})

    @contextlib.contextmanager
    def claim(self, token: str, vm: str) -> Iterator[None]:
        """Hold one of the `PER_TOKEN` sessions of `token` and one of the `per_vm` of `vm` while the block runs
        (TooManySessions, TooManyVmSessions when none is left)."""
        if self._claimed["token", token] >= PER_TOKEN:
            raise TooManySessions(limit=PER_TOKEN)
        if self._claimed["vm", vm] >= self.per_vm:
            raise TooManyVmSessions(vm=vm, limit=self.per_vm)
        held = (("token", token), ("vm", vm))
        self._claimed.update(held)
        try:
            yield
        finally:
            for key in held:
                self._claimed[key] -= 1
                if not self._claimed[key]:
                    del self._claimed[key]

    @contextlib.contextmanager
    def refusals(self, kind: str) -> Iterator[None]:
        """Count the expected failure the block raises as a refused `kind` console (it goes on)."""
        try:
            yield
        except HostStackError as e:
            self.refused[(kind, reason(e))] += 1
            raise

    @property
    def open(self) -> int:
        return len(self._open)

    @property
    def total(self) -> int:
        return sum(self.opened.values())

    def relayed(self) -> Counter[LabelValues]:
        """Bytes relayed by kind and direction, the open sessions' so far included."""
        now = Counter(self._ended)
        for kind, moved in self._open.values():
            now.update({(kind, d): n for d, n in zip(DIRECTIONS, moved, strict=True)})
        return now

    def register(self, registry: Registry) -> None:
        """The tally as series of `registry`, read when scraped."""
        registry.count("hoststack_console_sessions_opened_total", "console sessions opened (the host's tunnel "
                       "reached, the browser's websocket upgraded)", lambda: every(self.opened, KINDS), ("kind",))
        registry.gauge("hoststack_console_sessions_open", "console sessions open now",
                       lambda: every(Counter((k,) for k, _ in self._open.values()), KINDS), ("kind",))
        registry.count("hoststack_console_refused_total", "console pages and websockets refused, by the code the "
                       "browser is told (coordinator_refused: the coordinator's own refusal, such as a deleted VM's)",
                       lambda: every(self.refused, KINDS, REASONS), ("kind", "reason"))
        registry.count("hoststack_console_relayed_bytes_total", "bytes relayed (up: browser to console, down: "
                       "console to browser), open sessions' included",
                       lambda: every(self.relayed(), KINDS, DIRECTIONS), ("kind", "direction"))

    async def close_all(self) -> None:
        """Close every browser side (its relay then closes the tunnel) and wait until all are closed: a browser
        that reads nothing is cut off (`WsPipe.close`), it does not hold the proxy's stop."""
        await asyncio.gather(*(browser.close(STOPPING) for browser in list(self._open)))
