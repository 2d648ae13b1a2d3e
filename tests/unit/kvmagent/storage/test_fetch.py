"""Image downloads: resumed with Range from what an earlier try left, verified by size and sha256."""

from __future__ import annotations

import hashlib
import os

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agentkit.model import ImageRef
from kvmagent.errors import ImageFetchError
from kvmagent.storage.fetch import Sink, fetch
from kvmagent.storage.tickets import Source

DATA = bytes(range(256)) * 9000  # ~2.3 MB: several chunks


def image(data: bytes = DATA, **kw) -> ImageRef:
    return ImageRef(**{"uuid": "img1", "format": "raw", "sha256": hashlib.sha256(data).hexdigest(),
                       "size": len(data), **kw})


def at(url) -> object:
    """A `locate` that always answers `url` (no credential)."""
    async def locate(session, image):
        return Source(str(url), {})
    return locate


@pytest.fixture
async def server():
    seen: list[str | None] = []

    async def ranged(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Range"))
        start = int(request.headers["Range"][6:-1]) if "Range" in request.headers else 0
        status = 206 if start else 200
        headers = {"Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"} if start else {}
        return web.Response(body=DATA[start:], status=status, headers=headers)

    async def plain(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Range"))
        return web.Response(body=DATA)

    app = web.Application()
    app.router.add_get("/img", ranged)
    app.router.add_get("/plain", plain)

    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such image")
    app.router.add_get("/gone", gone)

    async def ticketed(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer t2":
            return web.Response(status=401, text="ticket expired")
        return await ranged(request)

    app.router.add_get("/ticketed", ticketed)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    srv.seen = seen
    yield srv
    await srv.close()


async def test_a_download_resumes_where_the_last_try_stopped(server, tmp_path):
    part = tmp_path / "img1.part"
    part.write_bytes(DATA[:1000])
    async with aiohttp.ClientSession() as s:
        await fetch(s, image(), part, at(server.make_url("/img")))
    assert part.read_bytes() == DATA and server.seen == ["bytes=1000-"]


async def test_a_server_without_ranges_sends_it_all_again(server, tmp_path):
    part = tmp_path / "img1.part"
    part.write_bytes(DATA[:1000])
    async with aiohttp.ClientSession() as s:
        await fetch(s, image(), part, at(server.make_url("/plain")))
    assert part.read_bytes() == DATA


async def test_wrong_bytes_are_refused_and_removed(server, tmp_path):
    part = tmp_path / "img1.part"
    async with aiohttp.ClientSession() as s:
        with pytest.raises(ImageFetchError, match="expected .* with sha256 0000"):
            await fetch(s, image(sha256="0" * 64), part, at(server.make_url("/img")))
        assert not part.exists()
        with pytest.raises(ImageFetchError, match="HTTP 404 no such image"):
            await fetch(s, image(), part, at(server.make_url("/gone")))
        with pytest.raises(ImageFetchError, match="more than the 10 bytes"):
            await fetch(s, image(size=10), part, at(server.make_url("/img")))


async def test_a_refused_ticket_is_replaced_and_the_download_resumed(server, tmp_path):
    asked = []

    async def locate(session, image):
        asked.append(1)
        return Source(str(server.make_url("/ticketed")), {"Authorization": f"Bearer t{len(asked)}"})

    part = tmp_path / "img1.part"
    async with aiohttp.ClientSession() as s:
        await fetch(s, image(), part, locate)
    assert part.read_bytes() == DATA and len(asked) == 2


def test_a_short_write_is_finished_and_only_what_reached_the_file_is_counted(tmp_path, monkeypatch):
    """os.write may write less than asked (a signal, a filesystem nearly full): the rest is written, and the
    size and hash are those of the file, so a short file can never be taken for the image."""
    real_write = os.write

    def short(fd: int, data) -> int:
        return real_write(fd, bytes(data[:1000]))
    sink = Sink(tmp_path / "img.partial")
    monkeypatch.setattr(os, "write", short)
    sink.write(DATA[:5000])
    monkeypatch.undo()
    sink.close()
    assert (tmp_path / "img.partial").read_bytes() == DATA[:5000]
    assert (sink.size, sink.hash.hexdigest()) == (5000, hashlib.sha256(DATA[:5000]).hexdigest())


def test_a_write_that_makes_no_progress_fails_instead_of_looping(tmp_path, monkeypatch):
    sink = Sink(tmp_path / "img.partial")
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(OSError, match="no progress"):
        sink.write(DATA[:10])
    monkeypatch.undo()
    sink.close()
    assert sink.size == 0
