"""Cached images nothing uses are collected after the grace period; used, pinned or fresh ones stay."""

from __future__ import annotations

import json
import os
import time

from agentkit.supervise import Supervisor
from kvmagent.storage.imagecache import ImageCache
from kvmagent.storage.layout import Layout


async def never(*args):
    raise AssertionError("no download expected")


def cached(lay: Layout, uuid: str, age: float, now: float) -> None:
    folder = lay.image_dir(uuid)
    folder.mkdir(parents=True)
    (folder / "image.raw").write_bytes(b"x")
    (folder / "last-used").write_text("")
    os.utime(folder / "last-used", (now - age, now - age))


def test_collection_keeps_what_volumes_use_what_hosts_pin_and_what_was_used_lately(tmp_path):
    lay, now = Layout(tmp_path), time.time()
    cache = ImageCache(lay, "h1", never, Supervisor(), lambda: None)
    for uuid in ("unused", "by-volume", "pinned", "lately"):
        cached(lay, uuid, age=7200 if uuid != "lately" else 60, now=now)
    (lay.volume_dir("v1")).mkdir(parents=True)
    lay.record("v1").write_text(json.dumps({"image_uuid": "by-volume"}))
    cache.pin("pinned", True)
    os.utime(lay.image_dir("pinned") / "last-used", (now - 7200, now - 7200))
    assert cache.collect(grace=3600, now=now) == ["unused"]
    assert sorted(p.name for p in lay.images.iterdir() if not p.name.startswith(".")) == [
        "by-volume", "lately", "pinned"]
    cache.pin("pinned", False)
    assert cache.collect(grace=3600, now=now + 7200) == ["lately", "pinned"]  # by-volume was stamped in use
