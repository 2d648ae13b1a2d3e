"""Image sources: file:// opens nothing outside the roots nor tells it apart, and neither a symlink nor a
swapped name reads elsewhere; http(s) bodies come as the image's own bytes, never encoded; temp files
never eat into the reserve of their disk."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cephagent import sources
from cephagent.sources import RawStream, SourceError, Sources


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Sources, Path, Path]:
    root, outside = tmp_path / "images", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (root / "disk.raw").write_bytes(b"image")
    (outside / "shadow").write_bytes(b"secret")
    return Sources(None, [root], 60), root, outside  # type: ignore[arg-type] - file:// needs no HTTP session


def test_a_file_below_a_root_is_read_through_its_descriptor(tree):
    sources, root, _ = tree
    (root / "sub").mkdir()
    (root / "sub" / "disk.raw").write_bytes(b"image")
    for name in ("disk.raw", "sub/disk.raw"):
        with sources.opened(str(root / name)) as path:
            assert path.read_bytes() == b"image" and path.stat().st_size == 5


@pytest.mark.parametrize("make, words", [
    (lambda root, out: os.symlink(out / "shadow", root / "link.raw") or "link.raw", "symlinks are not followed"),
    (lambda root, out: os.symlink(out, root / "dir") or "dir/shadow", "symlinks are not followed"),
    (lambda root, out: os.symlink(root / "disk.raw", root / "alias.raw") or "alias.raw", "symlinks are not followed"),
    (lambda root, out: "../secret/shadow", "an absolute path without '..' is required"),
    (lambda root, out: "missing.raw", "no such file"),
    (lambda root, out: os.mkfifo(root / "fifo") or "fifo", "not a regular file"),
])
def test_what_leads_outside_a_root_or_is_no_file_is_refused(tree, make, words):
    sources, root, outside = tree
    with pytest.raises(SourceError, match=words), sources.opened(f"{root}/{make(root, outside)}"):
        pass


@pytest.mark.parametrize("host, refused", [("nfs1", True), ("localhost", False), ("", False)])
async def test_a_file_url_names_no_other_host(tree, tmp_path, host, refused):
    """file://nfs1/srv/images/disk.raw read this host's /srv/images/disk.raw (as an image of nfs1's)."""
    sources, root, _ = tree
    raw = sources.raw(f"file://{host}{root}/disk.raw", "raw", tmp_path, lambda p: None)
    if refused:
        with pytest.raises(SourceError, match=f"file:// URLs name no host: file://nfs1{root}/disk.raw"):
            async with raw:
                pass
    else:
        async with raw as src:
            assert src.size == 5


def test_nothing_outside_the_roots_is_opened_or_told_apart(tree, monkeypatch):
    """Opening a device can act (/dev/watchdog arms the watchdog), and differing errors would tell a caller
    which files exist: a path outside is refused before any open, in the same words whether it exists."""
    sources, root, outside = tree
    opened: list[str] = []
    real_open = os.open

    def m_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", m_open)
    said = []
    for name in ("shadow", "missing"):
        with pytest.raises(SourceError) as e, sources.opened(str(outside / name)):
            pass
        said.append(str(e.value).replace(name, "NAME"))
    assert said[0] == said[1] and "is outside the directories file:// URLs may read" in said[0]
    assert not [p for p in opened if p.startswith(str(outside))]


def test_swapping_the_name_after_the_check_reads_the_checked_file(tree):
    sources, root, outside = tree
    with sources.opened(str(root / "disk.raw")) as path:
        os.replace(root / "disk.raw", root / "old.raw")
        os.symlink(outside / "shadow", root / "disk.raw")
        assert path.read_bytes() == b"image"


DATA = bytes(range(256)) * 256  # 64 KiB of raw disk data that gzip shrinks


def gzipping(always: bool) -> web.Application:
    """A web server that gzips the image when the client accepts it (as most do), or `always`."""
    async def image(request: web.Request) -> web.Response:
        if always or "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=gzip.compress(DATA), headers={"Content-Encoding": "gzip"})
        return web.Response(body=DATA)

    app = web.Application()
    app.router.add_get("/disk.raw", image)
    return app


@pytest.fixture
async def http_source(tmp_path: Path) -> AsyncIterator[Callable[[bool], Awaitable[tuple[Sources, str]]]]:
    """http_source(always): Sources with the agent's session, and the URL of a gzipping server's image."""
    servers: list[TestServer] = []
    session = aiohttp.ClientSession(auto_decompress=False)  # as cephagent.main makes it

    async def make(always: bool) -> tuple[Sources, str]:
        servers.append(TestServer(gzipping(always), host="127.0.0.1"))
        await servers[-1].start_server()
        return Sources(session, [], 60), str(servers[-1].make_url("/disk.raw"))

    yield make
    await session.close()
    for s in servers:
        await s.close()


async def test_an_image_comes_as_its_own_bytes_not_gzipped(http_source, tmp_path):
    """Content-Length counts the bytes sent: a gzipped body failed as "download ended after X of Y bytes"."""
    sources, url = await http_source(False)
    async with sources.raw(url, "raw", tmp_path, lambda p: None) as src:
        assert isinstance(src, RawStream) and src.size == len(DATA)
        assert src.head + await src.response.content.read() == DATA


async def test_a_server_that_encodes_anyway_is_refused_in_words(http_source, tmp_path):
    sources, url = await http_source(True)
    with pytest.raises(SourceError, match="the server sent gzip-encoded data"):
        async with sources.raw(url, "raw", tmp_path, lambda p: None):
            pass
    assert list(tmp_path.iterdir()) == []  # nothing spooled


@pytest.fixture
def filling(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A workdir on a 40 MiB filesystem with 12 MiB free before the import's temp files (10% kept free)."""
    def free_space(directory: Path) -> tuple[int, int]:
        return 40 << 20, (12 << 20) - sum(f.stat().st_blocks * 512 for f in directory.iterdir())

    monkeypatch.setattr(sources, "free_space", free_space)
    return tmp_path


async def test_a_body_without_end_is_cut_before_the_disk_fills(filling):
    """The spool shares its disk with the mon (which stops below 5% free): 32 MiB chunked, as long as it takes."""
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(32):
            await resp.write(b"\1" * (1 << 20))
        return resp

    app = web.Application()
    app.router.add_get("/disk.raw", endless)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession(auto_decompress=False) as session:
        with pytest.raises(SourceError, match=r"is full: .* \(10% of its filesystem\) are kept free"):
            async with Sources(session, [], 60).raw(str(server.make_url("/disk.raw")), "raw", filling,
                                                    lambda p: None):
                pass
    assert (filling / "download").stat().st_blocks * 512 <= 8 << 20


async def test_a_conversion_that_fills_the_disk_is_killed(filling, monkeypatch):
    """Compressed qcow2 clusters inflate: qemu-img is stopped once its output eats into the reserve."""
    killed = asyncio.Event()

    async def converting(args: list[str], timeout: float) -> None:
        Path(args[-1]).write_bytes(b"\1" * (10 << 20))
        try:
            await asyncio.sleep(3600)
        finally:
            killed.set()

    monkeypatch.setattr(sources, "arun", converting)
    monkeypatch.setattr(sources, "ROOM_CHECK_INTERVAL", 0.01)
    with pytest.raises(SourceError, match="is full"):
        await asyncio.wait_for(Sources(None, [], 60)._convert(filling / "in.qcow2", filling / "out.raw"), 5)  # type: ignore[arg-type]
    assert killed.is_set()


@pytest.mark.parametrize("announced", [True, False], ids=["streamed", "spooled"])
async def test_a_source_that_trickles_is_broken_off(tmp_path, announced):
    """A byte every 20 ms never trips the socket's read timeout: with less than a MiB in `read_timeout` (here
    0.3 s) the import fails saying so, streamed to RBD (a raw body of known length) or spooled (one without)."""
    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(8 << 20)} if announced else None)
        await resp.prepare(request)
        await resp.write(b"\1" * 4096)
        with contextlib.suppress(ConnectionResetError):
            for _ in range(500):  # 10 s, far past the window
                await asyncio.sleep(0.02)
                await resp.write(b"\1")
        return resp

    app = web.Application()
    app.router.add_get("/disk.raw", trickle)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession(auto_decompress=False) as session:
        src_url = str(server.make_url("/disk.raw"))
        with pytest.raises(SourceError, match=r"GET .*/disk.raw: less than 1048576 bytes came in 0.3 s \(setting "
                           "read_timeout\\)"):
            async with asyncio.timeout(5), Sources(session, [], 60, read_timeout=0.3).raw(
                    src_url, "raw", tmp_path, lambda p: None) as src:
                assert isinstance(src, RawStream)
                async for _ in src.response.content.iter_chunked(1 << 20):  # as the import writes it to RBD
                    pass
