"""What one client address may cost the coordinator in refused tokens.

Every token of ours (one of a token's shape: junk is refused without asking) costs the coordinator a
request. A refusal of the token (4xx: unknown, expired, another console's, the coordinator's own such as a
deleted VM's) spends one of its address's `token_failures` per `token_failure_window`, refilled evenly over
the window; an address with none left is refused 429 `too_many_failed_tokens` without asking, a good token
too. A resolution takes its place in the budget before it asks, so that many at once from one address
cannot all reach the coordinator, and gives it back when the token was granted or the coordinator could not
tell (503: not the client's doing).

The address is the connection's peer: the proxy knows no trusted front proxies, so X-Forwarded-For, which a
client writes itself, counts for nothing. An IPv6 client spends its /64's budget, as one host may take any
address in it. The table of addresses is bounded (`agentkit.buckets`: `ADDRESSES`, full budgets forgotten
first, then new addresses share one), so a spray from many addresses cannot grow it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import time
from collections.abc import Callable, Iterator

from agentkit.buckets import TokenBuckets
from agentkit.errors import HostStackError
from consoleproxy.errors import TooManyFailedTokens

ADDRESSES = 10_000  # a budget is two floats: about 2 MB for the table at its largest


def source(address: str | None) -> str:
    """The budget a peer `address` spends: an IPv4 address's own (mapped into IPv6 too), an IPv6 one's /64."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or ""  # no IP peer (a unix socket): one budget for all of them
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        return str(mapped) if mapped else str(ipaddress.ip_network((ip, 64), strict=False))
    return str(ip)


class FailureBudget:
    def __init__(self, failures: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.failures, self.window = failures, window
        self._buckets = TokenBuckets(failures / window, failures, ADDRESSES, clock)

    @contextlib.contextmanager
    def spend(self, address: str | None) -> Iterator[None]:
        """Run the block, a resolution of a token from `address`, if the address has failures left
        (TooManyFailedTokens if not); a refusal of the token (4xx) the block raises spends one."""
        key = source(address)
        if not self._buckets.take(key):
            raise TooManyFailedTokens(source=key, failures=self.failures, window=self.window,
                                      wait=max(1, math.ceil(self._buckets.wait(key))))
        refused = False
        try:
            yield
        except HostStackError as e:
            refused = e.status < 500
            raise
        finally:
            if not refused:
                self._buckets.give(key)
