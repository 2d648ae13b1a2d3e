"""Image imports (no Ceph needed): what an interrupted import left goes at the next start; a cancelled one
ends with its worker thread; a raw source of no whole sectors makes an image of whole sectors (librbd faked in
memory here; tests/functional/cephagent/test_ceph_images.py imports one into a real cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import rbd
from aiohttp import web
from aiohttp.test_utils import TestServer

from cephagent.images import Images, joined, remove_leftovers, whole_sectors
from cephagent.sources import Sources
from cephagent.volumes import Volumes
from cephagent.wire import IMAGE_SNAPSHOT, ImageImportRequest
from cephagent.workers import Workers

MiB = 1 << 20


def test_the_temp_files_of_interrupted_imports_are_removed_and_nothing_else(tmp_path):
    for leftover in ("import-a1b2/download", "import-c3d4/converted.raw"):
        (tmp_path / leftover).parent.mkdir()
        (tmp_path / leftover).write_bytes(b"\1" * 4096)
    (tmp_path / "operator-notes").write_text("kept")
    remove_leftovers(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["operator-notes"]


def test_what_no_import_made_is_left_alone_and_the_agent_starts(tmp_path):
    """A tmp_dir others can write (an operator's /tmp): a symlink or a file named import-* ended every start with
    rmtree's error, for systemd to restart the agent into the same error."""
    (tmp_path / "import-link").symlink_to(tmp_path / "kept")
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "data").write_text("kept")
    (tmp_path / "import-file").write_text("kept")
    remove_leftovers(tmp_path)
    assert (tmp_path / "kept" / "data").read_text() == (tmp_path / "import-file").read_text() == "kept"
    assert (tmp_path / "import-link").is_symlink()


def test_a_first_start_finds_no_tmp_dir_yet(tmp_path):
    remove_leftovers(tmp_path / "tmp")
    assert not (tmp_path / "tmp").exists()


async def test_a_cancelled_import_ends_only_after_its_worker_thread():
    """A DELETE cancels the image's import and removes the image next: the import's thread (creating,
    writing or holding the image open) must be done by then, told to stop by the event it polls."""
    stop, left = threading.Event(), []

    def write_until_stopped() -> None:
        while not stop.wait(0.01):
            pass
        time.sleep(0.1)  # closing the image
        left.append("closed")

    work = asyncio.ensure_future(joined(Workers(1, 1), stop, write_until_stopped))
    await asyncio.sleep(0.05)
    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await work
    assert left == ["closed"]


class Stored:
    def __init__(self, size: int):
        self.data, self.meta, self.snaps = bytearray(size), {}, {}


class FakeImage:
    """The librbd calls an import makes, on bytes in memory: a write past the image's end fails as librbd's does."""

    def __init__(self, io: dict[str, Stored], name: str, read_only: bool = False):
        if name not in io:
            raise rbd.ImageNotFound(f"no image {name}")
        self.s = io[name]

    def __enter__(self) -> FakeImage:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def size(self) -> int:
        return len(self.s.data)

    def aio_write(self, data: bytes, offset: int, done: Callable[[Any], None]) -> None:
        fits = offset + len(data) <= len(self.s.data)
        if fits:
            self.s.data[offset : offset + len(data)] = data
        done(SimpleNamespace(get_return_value=lambda: len(data) if fits else -errno.EINVAL))

    def flush(self) -> None:
        pass

    def metadata_set(self, key: str, value: str) -> None:
        self.s.meta[key] = value

    def metadata_list(self) -> list[tuple[str, str]]:
        return list(self.s.meta.items())

    def metadata_remove(self, key: str) -> None:
        del self.s.meta[key]

    def create_snap(self, name: str) -> None:
        self.s.snaps[name] = False

    def protect_snap(self, name: str) -> None:
        self.s.snaps[name] = True

    def snap_exists(self, name: str) -> bool:
        return name in self.s.snaps

    def is_protected_snap(self, name: str) -> bool:
        return self.s.snaps[name]

    def set_snap(self, name: str | None) -> None:
        pass

    def list_children2(self) -> list[dict[str, str]]:
        return []


class FakeRBD:
    def create(self, io: dict[str, Stored], name: str, size: int, old_format: bool = False) -> None:
        io[name] = Stored(size)

    def rename(self, io: dict[str, Stored], old: str, new: str) -> None:
        io[new] = io.pop(old)

    def remove(self, io: dict[str, Stored], name: str) -> None:
        if io.pop(name, None) is None:
            raise rbd.ImageNotFound(f"no image {name}")


class FakeCluster:
    def __init__(self) -> None:
        self.pool: dict[str, Stored] = {}

    @contextlib.contextmanager
    def ioctx(self, pool: str, field: str | None = "pool") -> Iterator[dict[str, Stored]]:
        yield self.pool


@pytest.fixture
async def odd_source(tmp_path) -> AsyncIterator[tuple[bytes, str, str]]:
    """A raw disk of 3 MiB and 1000 bytes (not whole sectors), as a file:// and as an http:// URL with a length."""
    data = random.Random(7).randbytes(3 * MiB + 1000)
    (tmp_path / "odd.raw").write_bytes(data)

    async def odd(request: web.Request) -> web.FileResponse:
        return web.FileResponse(tmp_path / "odd.raw")

    app = web.Application()
    app.router.add_get("/odd.raw", odd)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield data, f"file://{tmp_path}/odd.raw", str(server.make_url("/odd.raw"))
    await server.close()


@pytest.mark.parametrize("scheme", ["file", "http"])
async def test_a_raw_source_of_no_whole_sectors_is_imported_as_the_next_whole_sector_with_zeros(
    tmp_path, monkeypatch, odd_source, scheme
):
    """A volume is whole sectors (a clone of any other size is refused): the image its clones inherit their size
    from is made of the next multiple of 512 bytes, the tail reading as zeros as a disk's partial sector would."""
    data, file_url, http_url = odd_source
    monkeypatch.setattr(rbd, "Image", FakeImage)
    cluster = FakeCluster()
    volumes = Volumes(cluster)
    volumes.rbd = FakeRBD()
    async with aiohttp.ClientSession() as session:
        images = Images(cluster, volumes, Sources(session, [tmp_path], 60), Workers(2, 1), tmp_path / "staging")
        url = file_url if scheme == "file" else http_url
        info = await images.import_url(ImageImportRequest(pool="p", name="odd", url=url), lambda p: None)
    assert info.size == 3 * MiB + 1024 == whole_sectors(len(data))
    assert cluster.pool["odd"].data == data + bytes(24)
    assert (cluster.pool["odd"].meta, cluster.pool["odd"].snaps) == ({}, {IMAGE_SNAPSHOT: True})
    assert [whole_sectors(n) for n in (1, 511, 512, 513, 1 << 50)] == [512, 512, 512, 1024, 1 << 50]
