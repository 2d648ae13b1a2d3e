"""The one CAS retry policy: retries lost races, passes domain errors through, gives up with a 409."""

from __future__ import annotations

import pytest

from agentkit.errors import NotFound
from coordinator.etcd.cas import Contended, retry_cas


async def test_retries_until_the_transaction_commits():
    seen = []

    async def attempt(n: int) -> str | None:
        seen.append(n)
        return "done" if n == 2 else None

    assert await retry_cas(attempt, "host h1") == "done"
    assert seen == [0, 1, 2]


async def test_gives_up_with_a_conflict_naming_the_object():
    async def attempt(n: int) -> None:
        return None

    with pytest.raises(Contended, match="host h1 keeps changing concurrently") as e:
        await retry_cas(attempt, "host h1", attempts=3)
    assert e.value.status == 409


async def test_domain_errors_are_not_retried():
    calls = 0

    async def attempt(n: int) -> None:
        nonlocal calls
        calls += 1
        raise NotFound(what="host", ident="h1")

    with pytest.raises(NotFound, match="host h1 does not exist"):
        await retry_cas(attempt, "host h1")
    assert calls == 1
