"""Calls started at the same moment on threads of their own, for tests of what callers at once do to shared state."""

from __future__ import annotations

import threading
from collections.abc import Callable


def at_once(calls: list[Callable[[], object]], timeout: float = 120) -> list[Exception]:
    """Run `calls` on threads released together by a barrier (so they overlap however slow thread starts are);
    the exceptions they raised, once all have ended (or `timeout` s passed for each)."""
    start, errors = threading.Barrier(len(calls)), []

    def run(call: Callable[[], object]) -> None:
        start.wait()
        try:
            call()
        except Exception as e:  # noqa: BLE001 - handed to the caller
            errors.append(e)
    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return errors
