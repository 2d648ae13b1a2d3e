"""Cached images nothing uses are collected after the grace period; used, pinned or fresh ones stay."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from agentkit.model import ImageRef
from agentkit.supervise import Supervisor
from kvmagent.errors import ImageFetchError, StorageError
from kvmagent.storage import imagecache
from kvmagent.storage.imagecache import TRASH_AGE, Cached, ImageCache
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


def test_an_image_another_host_collects_at_the_same_moment_is_skipped(tmp_path, monkeypatch):
    """Two hosts of one SharedMountPoint collect at once: the second finds the image gone when it moves it
    to the trash, and goes on with the others."""
    lay, now = Layout(tmp_path), time.time()
    cache = ImageCache(lay, "h1", never, Supervisor(), lambda: None)
    for uuid in ("a", "b"):
        cached(lay, uuid, age=7200, now=now)
    real_replace = os.replace

    def raced(src, dst):
        if Path(src).name == "a":
            shutil.rmtree(src)  # the other host's collection took it a moment ago
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", raced)
    assert cache.collect(grace=3600, now=now) == ["b"]
    monkeypatch.undo()
    assert [p.name for p in lay.images.iterdir() if not p.name.startswith(".")] == []


def test_a_collection_the_filesystem_fails_is_a_storage_error(tmp_path):
    lay, now = Layout(tmp_path), time.time()
    cached(lay, "a", age=7200, now=now)
    (lay.images / ".trash").write_text("a file where the trash directory should be")
    with pytest.raises(StorageError, match=f"image cache of {tmp_path} not collected: .*File exists"):
        ImageCache(lay, "h1", never, Supervisor(), lambda: None).collect(grace=3600, now=now)


def test_a_collection_finishes_the_removals_a_crash_cut_short(tmp_path):
    """An image collected or a volume deleted goes into a trash by one rename, then is deleted: what an agent
    killed in between left there goes at a later collection, once no other host can still be moving it back."""
    lay = Layout(tmp_path)
    cache = ImageCache(lay, "h1", never, Supervisor(), lambda: None)
    for leftover in (lay.images / ".trash/i1.0a1b2c3d", tmp_path / ".trash/v1.0a1b2c3d"):
        leftover.mkdir(parents=True)
        (leftover / "f0.qcow2").write_bytes(b"x" * 4096)
    cache.collect(grace=3600)
    assert len(list((lay.images / ".trash").iterdir())) == len(list((tmp_path / ".trash").iterdir())) == 1
    cache.collect(grace=3600, now=time.time() + TRASH_AGE)
    assert list((lay.images / ".trash").iterdir()) == list((tmp_path / ".trash").iterdir()) == []


def test_a_collection_removes_this_hosts_downloads_nobody_resumed_within_the_grace(tmp_path):
    """A download cut short (the agent killed, or failed) keeps its partial file to resume from; one no volume
    or ISO asked for again within the grace (the volume deleted meanwhile) goes, as an unused image would. A
    download running now and another host's are left alone."""
    lay, now = Layout(tmp_path), time.time()
    cache = ImageCache(lay, "h1", never, Supervisor(), lambda: None)
    for image, host, age in (("gone", "h1", 7200), ("running", "h1", 7200), ("lately", "h1", 60),
                             ("gone", "h2", 7200)):
        partial = lay.partial(image, host)
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(b"x" * 4096)
        os.utime(partial, (now - age, now - age))
    cache.progress["running"] = 4096
    cache.collect(grace=3600, now=now)
    assert sorted(p.name for p in (lay.images / ".partial").iterdir()) == [
        "gone.h2.part", "lately.h1.part", "running.h1.part"]


async def test_a_download_the_filesystem_fails_is_a_failed_download_not_a_crash(tmp_path):
    """The partial file cannot be written or synced (a full or read-only filesystem; NFS tells at the fsync): the
    image's download failed and is tried again later, where the error ended the whole agent (a bug's way),
    again at every start while the filesystem stayed so."""
    async def no_space(image: ImageRef, partial: Path, progress: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    tasks = Supervisor(on_crash=lambda: None)
    cache = ImageCache(Layout(tmp_path), "h1", no_space, tasks, lambda: None)
    image = ImageRef(uuid="img1", format="raw", sha256="0" * 64, size=4096)
    assert cache.want(image) is None
    await asyncio.sleep(0.05)
    assert tasks.crashed is None
    with pytest.raises(ImageFetchError, match="No space left on device"):
        cache.want(image)


async def test_failed_downloads_are_remembered_only_until_they_are_tried_again(tmp_path, monkeypatch):
    """Images whose download failed, then deleted (never asked for again): their failures do not pile up."""
    async def unreachable(image: ImageRef, partial: Path, progress: object) -> None:
        raise OSError(errno.EHOSTUNREACH, "No route to host")

    monkeypatch.setattr("kvmagent.storage.imagecache.RETRY_AFTER", 0.0)
    cache = ImageCache(Layout(tmp_path), "h1", unreachable, Supervisor(on_crash=lambda: None), lambda: None)
    for i in range(1000):
        assert cache.want(ImageRef(uuid=f"img{i}", format="raw", sha256="0" * 64, size=4096)) is None
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert len(cache._failed) <= 1


async def test_a_cached_image_whose_record_cannot_be_read_is_fetched_again(tmp_path, monkeypatch, caplog):
    """A damaged image.json (a disk error, a hand edit) refused the image to every volume over it, for good (a
    volume still using it kept it from collection); it is fetched again, verified, and its record rewritten."""
    async def fetch(image: ImageRef, partial: Path, progress: object) -> None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(b"disk")

    async def info(path: Path, fmt: str) -> imagecache.qemuimg.Info:
        return imagecache.qemuimg.Info(fmt, 4, None)

    monkeypatch.setattr(imagecache.qemuimg, "info", info)
    lay = Layout(tmp_path)
    cached(lay, "img1", age=0, now=time.time())
    (lay.image_dir("img1") / "image.json").write_bytes(b'{"uuid": "img1", "sha256": "')
    cache = ImageCache(lay, "h1", fetch, Supervisor(), lambda: None)
    image = ImageRef(uuid="img1", format="raw", sha256="0" * 64, size=4)
    assert cache.want(image) is None
    assert str(lay.image_dir("img1") / "image.json") in caplog.text
    await asyncio.sleep(0.05)
    assert cache.want(image) == Cached(lay.image_file("img1", "raw"), "raw", 4)
    assert lay.image_file("img1", "raw").read_bytes() == b"disk"
