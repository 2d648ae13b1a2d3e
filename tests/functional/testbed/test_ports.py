"""Parallel workers and concurrent runs draw ports from one machine-wide reservation."""

from __future__ import annotations

import multiprocessing


def _draw(n: int) -> list[int]:
    from testbed.ports import free_port

    return [free_port() for _ in range(n)]


def test_processes_drawing_at_once_never_get_the_same_port():
    with multiprocessing.get_context("spawn").Pool(4) as workers:
        draws = workers.map(_draw, [300] * 4)
    every = [p for d in draws for p in d]
    assert len(set(every)) == len(every) == 1200
