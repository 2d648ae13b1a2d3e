"""An image's copy in a Ceph image cache: who carries an import forward when its creator died."""

from __future__ import annotations

import time

import pytest

from coordinator.domain.ceph import imagecache
from coordinator.domain.ceph.imagecache import CacheRecord
from coordinator.etcd.store import Entry


@pytest.mark.parametrize(("created", "submitted"), [(-10, False), (-31, True), (3600, True), (1e12, True)])
async def test_a_copy_whose_creator_never_submitted_it_is_submitted_by_a_waiter(monkeypatch, created, submitted):
    """Once its record is older than ORPHAN, or stamped further ahead than that (by a replica whose clock is
    off: it would never get old enough)."""
    async def submit(*args: object) -> None:
        calls.append(args)
    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(imagecache, "_submit", submit)
    rec = CacheRecord(ps_uuid="p1", image_uuid="i1", pool="cache", rbd_image="img-i1", status="Importing",
                      created_at=time.time() + created)
    await imagecache._step(None, None, None, None, None, rec, Entry("k", rec.model_dump(), 1, 1))  # type: ignore[arg-type]
    assert bool(calls) == submitted
