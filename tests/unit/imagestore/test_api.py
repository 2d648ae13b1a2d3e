"""The image store app in-process, images from a stand-in web server on loopback (ISO data: no qemu-img
in unit tests): tickets and tokens, Range serving, resumption after a cut, failures that leave nothing,
a restart that finds ready images and resumes downloads. A bug (a crashed download) fails the test that
caused it."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import random
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agentkit.diskimage import DiskInfo
from agentkit.supervise import Supervisor
from imagestore import catalog, download, layout, main
from imagestore.errors import RootUnusable
from imagestore.layout import Layout
from imagestore.main import init_app
from imagestore.settings import ImageStoreSettings
from imagestore.tickets import mint, ticket_key

TOKEN = "t" * 24
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
MiB = 1 << 20


def iso_blob(size: int = 3 * MiB, seed: int = 1) -> bytes:
    data = bytearray(random.Random(seed).randbytes(size))
    data[0x8001:0x8006] = b"CD001"
    data[MiB:2 * MiB] = bytes(MiB)  # a run of zeros: stays a hole
    return bytes(data)


@dataclass
class Source:
    """A web server with /<name> (Range-capable files), /cut/<name> (the first answer breaks off after
    `cut_at` bytes), /slow/<name> (64 KiB every 50 ms), /moved?to=<location> (a 302 to anything),
    /chunked/<name> (no Content-Length), /overlong/<name> (cut as /cut/, then every 206 sends 4 MiB more
    than its Content-Range says), /trickle/<name> (64 KiB, then a byte every 50 ms for 10 s). `served`
    records (path, status, bytes)."""

    dir: Path
    cut_at: int = MiB + 5
    served: list[tuple[str, int, int]] = field(default_factory=list)
    cut_done: set[str] = field(default_factory=set)
    server: TestServer | None = None

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/{path}"))

    async def file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        resp = web.FileResponse(self.dir / name)
        await resp.prepare(request)
        self.served.append((request.path, resp.status, resp.content_length or 0))
        return resp

    async def cut(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name in self.cut_done:
            return await self.file(request)
        self.cut_done.add(name)
        data = (self.dir / name).read_bytes()
        resp = web.StreamResponse(headers={"Content-Length": str(len(data)), "ETag": '"v1"'})
        await resp.prepare(request)
        await resp.write(data[:self.cut_at])
        self.served.append((request.path, 200, self.cut_at))
        assert request.transport is not None
        request.transport.close()
        return resp

    async def slow(self, request: web.Request) -> web.StreamResponse:
        data = (self.dir / request.match_info["name"]).read_bytes()
        resp = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await resp.prepare(request)
        for at in range(0, len(data), 64 << 10):
            await resp.write(data[at:at + (64 << 10)])
            await asyncio.sleep(0.05)
        return resp

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write((self.dir / request.match_info["name"]).read_bytes())
        return resp

    async def overlong(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.cut_done:
            return await self.cut(request)
        data = (self.dir / name).read_bytes()
        start = int(request.headers["Range"].removeprefix("bytes=").removesuffix("-"))
        resp = web.StreamResponse(status=206, headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(data[start:] + random.randbytes(4 * MiB))
        return resp

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        data = (self.dir / request.match_info["name"]).read_bytes()
        resp = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await resp.prepare(request)
        await resp.write(data[:64 << 10])
        for at in range(64 << 10, (64 << 10) + 200):
            await asyncio.sleep(0.05)
            await resp.write(data[at:at + 1])
        return resp

    async def moved(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": request.query["to"]})


@pytest.fixture(autouse=True)
def no_crash(monkeypatch) -> Iterator[None]:
    """The stores' Supervisor would end the test run on a bug (a download that crashed): here the test fails."""
    supervisors: list[Supervisor] = []

    def supervisor() -> Supervisor:
        supervisors.append(Supervisor(on_crash=lambda: None))
        return supervisors[-1]

    monkeypatch.setattr(main, "Supervisor", supervisor)
    yield
    assert [s.crashed for s in supervisors if s.crashed is not None] == []


@pytest.fixture
async def source(tmp_path) -> AsyncIterator[Source]:
    src = Source(tmp_path / "www")
    src.dir.mkdir()
    (src.dir / "a.iso").write_bytes(iso_blob())
    (src.dir / "b.iso").write_bytes(iso_blob(seed=2))
    app = web.Application()
    app.router.add_get("/cut/{name}", src.cut)
    app.router.add_get("/slow/{name}", src.slow)
    app.router.add_get("/moved", src.moved)
    app.router.add_get("/chunked/{name}", src.chunked)
    app.router.add_get("/overlong/{name}", src.overlong)
    app.router.add_get("/trickle/{name}", src.trickle)
    app.router.add_get("/{name}", src.file)
    src.server = TestServer(app, host="127.0.0.1")
    await src.server.start_server()
    yield src
    await src.server.close()


def settings(root: Path, **kw: object) -> ImageStoreSettings:
    return ImageStoreSettings.model_validate({"token": TOKEN, "root": str(root), "reserve_bytes": 0,
                                              "checkpoint_bytes": MiB, **kw})


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(init_app(settings(tmp_path / "store")), host="127.0.0.1")) as client:
        yield client


async def put(store: TestClient, image_id: str, **body: object) -> dict:
    r = await store.put(f"/v1/images/{image_id}", json=body, headers=ADMIN)
    assert r.status in (200, 202), await r.text()
    return await r.json()


async def wait(store: TestClient, image_id: str, until: tuple[str, ...] = ("ready", "failed")) -> dict:
    for _ in range(400):
        info = await (await store.get(f"/v1/images/{image_id}", headers=ADMIN)).json()
        if info["state"] in until:
            return info
        await asyncio.sleep(0.02)
    raise AssertionError(f"{image_id} stays {info['state']}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_an_iso_is_added_and_served_with_range_to_ticket_holders(store, source, tmp_path):
    data = (source.dir / "a.iso").read_bytes()
    info = await wait(store, (await put(store, "i1", url=source.url("a.iso")))["id"])
    assert (info["state"], info["format"], info["media_type"], info["size"]) == ("ready", "iso", "ISO", len(data))
    assert info["sha256"] == hashlib.sha256(data).hexdigest() and info["actual_size"] <= len(data) - MiB
    while not info["md5"]:  # no md5 was given to check: computed from the ready file, not while downloading
        info = await (await store.get("/v1/images/i1", headers=ADMIN)).json()
    assert info["md5"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    ticket = mint(ticket_key(TOKEN), "host:h1", "i1", 60)[0]
    r = await store.get("/v1/images/i1/data", headers={"Authorization": f"Bearer {ticket}", "Range": "bytes=10-19"})
    assert (r.status, await r.read(), r.headers["Content-Range"]) == (206, data[10:20], f"bytes 10-19/{len(data)}")
    assert r.headers["X-Image-Sha256"] == info["sha256"] and r.headers["X-Image-Format"] == "iso"
    r = await store.get(f"/v1/images/i1/data?ticket={ticket}")
    assert (r.status, await r.read()) == (200, data)
    r = await store.head("/v1/images/i1/data", headers=ADMIN)
    assert (r.status, r.headers["Content-Length"], r.headers["Accept-Ranges"]) == (200, str(len(data)), "bytes")


async def test_a_ticket_reads_one_image_and_nothing_else(store, source):
    await wait(store, (await put(store, "i1", url=source.url("a.iso")))["id"])
    ticket = mint(ticket_key(TOKEN), "host:h1", "other", 60)[0]
    bearer = {"Authorization": f"Bearer {ticket}"}
    r = await store.get("/v1/images/i1/data", headers=bearer)
    assert (r.status, (await r.json())["error"]["code"]) == (401, "ticket_refused")
    assert "it is for image other, not i1" in (await r.json())["error"]["message"]
    own = {"Authorization": f"Bearer {mint(ticket_key(TOKEN), 'host:h1', 'i1', 60)[0]}"}
    for method, path in [("GET", "/v1/images"), ("GET", "/v1/images/i1"), ("DELETE", "/v1/images/i1"),
                         ("PUT", "/v1/images/i1"), ("GET", "/health")]:
        r = await store.request(method, path, headers=own, json={"url": source.url("b.iso")})
        assert (r.status, (await r.json())["error"]["code"]) == (401, "unauthorized"), path
    assert (await store.get(f"/v1/images/i1/data?ticket={TOKEN}")).status == 401  # the token only in the header
    assert (await store.get("/v1/images/i1/data")).status == 401


async def test_a_broken_transfer_resumes_with_range_and_fetches_nothing_twice(store, source):
    size = (source.dir / "a.iso").stat().st_size
    info = await wait(store, (await put(store, "c1", url=source.url("cut/a.iso")))["id"])
    assert info["state"] == "ready" and info["sha256"] == sha256(source.dir / "a.iso")
    (_, _, sent), (_, status, rest) = source.served
    assert (sent, status, rest) == (source.cut_at, 206, size - source.cut_at)  # resumed at the very byte


async def test_a_wrong_checksum_leaves_nothing_and_the_right_one_may_follow(store, source, tmp_path):
    info = await wait(store, (await put(store, "s1", url=source.url("a.iso"), sha256="0" * 64))["id"])
    assert (info["state"], info["error"]["code"]) == ("failed", "checksum_mismatch")
    assert [p for p in (tmp_path / "store").rglob("*") if "s1" in str(p)] == []
    info = await wait(store, (await put(store, "s1", url=source.url("a.iso"), md5=hashlib.md5(
        (source.dir / "a.iso").read_bytes(), usedforsecurity=False).hexdigest()))["id"])
    assert info["state"] == "ready"


async def test_requests_while_downloading_and_deleting_a_download(store, source, tmp_path):
    await put(store, "w1", url=source.url("slow/a.iso"))
    while not (await wait(store, "w1", until=("downloading",)))["progress"]["done"]:
        await asyncio.sleep(0.05)
    r = await store.get("/v1/images/w1/data", headers=ADMIN)
    assert (r.status, (await r.json())["error"]["code"]) == (409, "not_ready")
    r = await store.put("/v1/images/w1", json={"url": source.url("b.iso")}, headers=ADMIN)
    assert (r.status, (await r.json())["error"]) == (409, {"code": "image_exists", "field": "url", "message":
                                                           "image w1 already exists with other parameters "
                                                           "(different url); delete it first"})
    info = await (await store.get("/v1/images/w1", headers=ADMIN)).json()
    assert info["progress"]["phase"] == "download" and 0 < info["progress"]["done"] < info["progress"]["total"]
    assert (await store.delete("/v1/images/w1", headers=ADMIN)).status == 204
    assert (await store.get("/v1/images/w1", headers=ADMIN)).status == 404
    assert list((tmp_path / "store/partial").iterdir()) == []


async def test_ids_are_checked(store):
    r = await store.get("/v1/images/a.b", headers=ADMIN)
    assert (r.status, (await r.json())["error"]["field"]) == (400, "image_id")
    for url in ("file:///etc/passwd", "http://h:99999/a.iso", "http://[::1/a.iso", "http://a\x01b/a.iso",
                "https:///a.iso"):
        r = await store.put("/v1/images/x", json={"url": url}, headers=ADMIN)
        assert (r.status, (await r.json())["error"]["code"]) == (400, "url_refused"), url
    assert (await store.get("/v1/images/x", headers=ADMIN)).status == 404


@pytest.mark.parametrize("location", ["http://h:99999/a.iso", "http://[::1/a.iso", "http://bad host/a.iso",
                                      "file:///etc/passwd"])
async def test_a_redirect_to_what_no_one_may_fetch_fails_the_download_naming_it(store, source, tmp_path, location):
    info = await wait(store, (await put(store, "m1", url=source.url("moved") + "?to=" + quote(location)))["id"])
    assert (info["state"], info["error"]["code"]) == ("failed", "source_failed")
    assert f"redirected to {location!r}" in info["error"]["message"]
    assert list((tmp_path / "store/partial").iterdir()) == []


async def test_a_source_that_sends_more_than_it_announced_fails_the_download(store, source, tmp_path):
    info = await wait(store, (await put(store, "o1", url=source.url("overlong/a.iso")))["id"])
    assert (info["state"], info["error"]["code"]) == ("failed", "source_failed")
    assert f"it sent more than the {len(iso_blob())} bytes it announced" in info["error"]["message"]
    assert list((tmp_path / "store/partial").iterdir()) == []


async def test_a_source_that_trickles_is_broken_off_and_fails(tmp_path, source):
    """A byte now and then never trips the socket's read timeout: less than a MiB in `read_timeout` counts as
    a broken transfer, and no progress for the retries."""
    root = tmp_path / "store"
    async with TestClient(TestServer(init_app(settings(root, read_timeout=0.5, retries=1)),
                                     host="127.0.0.1")) as store:
        info = await wait(store, (await put(store, "t1", url=source.url("trickle/a.iso")))["id"])
    assert (info["state"], info["error"]["code"]) == ("failed", "source_failed")
    assert (f"GET {source.url('trickle/a.iso')}: less than {MiB} bytes in 0.5 s (gave up after 2 tries)"
            in info["error"]["message"])
    assert list((root / "partial").iterdir()) == []


async def test_a_download_of_unknown_size_stops_at_the_reserve(tmp_path, source, monkeypatch):
    """Only a size announced up front is checked before the bytes come: the others are checked as they
    arrive (each checkpoint), so an endless body fails the download before the disk is full."""
    monkeypatch.setattr(Layout, "available", lambda self: (1 << 30) + MiB // 2)
    async with TestClient(TestServer(init_app(settings(tmp_path / "store", reserve_bytes=1 << 30)),
                                     host="127.0.0.1")) as store:
        info = await wait(store, (await put(store, "u1", url=source.url("chunked/a.iso")))["id"])
    assert (info["state"], info["error"]["code"]) == ("failed", "insufficient_space")
    assert f"{MiB} more bytes needed, {(1 << 30) + MiB // 2} available" in info["error"]["message"]
    assert list((tmp_path / "store/partial").iterdir()) == []


async def test_an_image_larger_than_max_image_size_is_refused_announced_or_not(tmp_path, source, monkeypatch):
    """A source's announced size, the bytes of one that announced none, an upload's and a qcow2's virtual size
    are each held against `max_image_size`: nothing of a larger image is kept."""
    root, size = tmp_path / "store", len(iso_blob())
    async with TestClient(TestServer(init_app(settings(root, max_image_size=2 * MiB)), host="127.0.0.1")) as store:
        info = await wait(store, (await put(store, "l1", url=source.url("a.iso")))["id"])
        assert (info["state"], info["error"]["message"]) == ("failed", f"{source.url('a.iso')} ({size} bytes) is "
                                                                       f"more than max_image_size ({2 * MiB} bytes)")
        info = await wait(store, (await put(store, "l2", url=source.url("chunked/a.iso")))["id"])
        assert (info["state"], info["error"]["code"]) == ("failed", "image_too_large")
        data = iso_blob(seed=3)
        r = await store.put("/v1/images/l3/data", data=data, headers=upload_headers("l3", data))
        assert (r.status, (await r.json())["error"]["code"]) == (413, "image_too_large")
    assert list((root / "partial").iterdir()) == [] and list((root / "images").iterdir()) == []
    head = b"QFI\xfb" + struct.pack(">IQIIQI", 3, 0, 0, 16, 10 << 40, 0)
    (source.dir / "big.qcow2").write_bytes(head + bytes(MiB - len(head)))

    async def info_of(path: Path, fmt: str, timeout: float) -> DiskInfo:
        return DiskInfo(format=fmt, virtual_size=10 << 40, actual_size=MiB)  # as qemu-img tells it

    monkeypatch.setattr(catalog, "inspect", info_of)
    async with TestClient(TestServer(init_app(settings(root)), host="127.0.0.1")) as store:
        info = await wait(store, (await put(store, "q1", url=source.url("big.qcow2")))["id"])
    assert (info["state"], info["error"]["message"]) == (
        "failed", f"the qcow2 image's virtual size ({10 << 40} bytes) is more than max_image_size ({1 << 40} bytes)")
    assert list((root / "partial").iterdir()) == [] and list((root / "images").iterdir()) == []


async def test_a_restarted_store_keeps_ready_images_and_resumes_downloads(tmp_path, source):
    root = tmp_path / "store"
    async with TestClient(TestServer(init_app(settings(root)), host="127.0.0.1")) as store:
        await wait(store, (await put(store, "r1", url=source.url("a.iso")))["id"])
        await put(store, "r2", url=source.url("slow/b.iso"))
        await asyncio.sleep(0.5)  # part of it is in
    (root / "partial/junk").mkdir()  # no state: removed, and so is what an operator left in their place
    (root / "images/stray.qcow2").write_bytes(b"not an image directory")
    (root / "partial/www").symlink_to(source.dir)  # the link goes, not what it points at
    async with TestClient(TestServer(init_app(settings(root)), host="127.0.0.1")) as store:
        images = {i["id"]: i for i in await (await store.get("/v1/images", headers=ADMIN)).json()}
        assert images["r1"]["state"] == "ready" and images["r2"]["state"] == "downloading"
        info = await wait(store, "r2")
        assert info["sha256"] == sha256(source.dir / "b.iso")
        (root / "images/later.qcow2").write_bytes(b"copied in while the store runs")
        capacity = await (await store.get("/v1/capacity", headers=ADMIN)).json()
        assert (capacity["images"], capacity["downloading"]) == (2, 0) and capacity["used"] > 0
    assert sorted(p.name for p in root.glob("*/*")) == ["later.qcow2", "r1", "r2"]
    assert (source.dir / "a.iso").exists()


async def test_a_second_store_on_the_same_directory_refuses_to_start(tmp_path, source):
    """Two image stores on one host given one root would resume each other's downloads into the same files:
    the second one ends with one line naming the directory, and the first goes on undisturbed."""
    root = tmp_path / "store"
    async with TestClient(TestServer(init_app(settings(root)), host="127.0.0.1")) as store:
        await put(store, "d1", url=source.url("slow/a.iso"))
        with pytest.raises(RootUnusable) as refused:
            async with TestClient(TestServer(init_app(settings(root)), host="127.0.0.1")):
                pass
        assert str(refused.value) == (f"root {root}: another imagestore process (pid {os.getpid()}) uses it "
                                      f"(it holds {root}/lock)")
        assert (await wait(store, "d1"))["sha256"] == sha256(source.dir / "a.iso")
    async with TestClient(TestServer(init_app(settings(root)), host="127.0.0.1")) as store:  # free again
        assert (await (await store.get("/v1/images/d1", headers=ADMIN)).json())["state"] == "ready"


async def test_an_image_written_before_a_reboot_is_checked_before_it_is_served(tmp_path, source):
    """Ready images are fsync'd in the background; one that was not yet durable when the machine rebooted
    is checked against its sha256 when the agent starts: intact it is served, damaged it is removed."""
    root = tmp_path / "store"
    async with TestClient(TestServer(init_app(settings(root)), host="127.0.0.1")) as store:
        for image_id, name in (("keep", "a.iso"), ("lose", "b.iso")):
            info = await wait(store, (await put(store, image_id, url=source.url(name)))["id"])
            while not info["md5"]:
                info = await (await store.get(f"/v1/images/{image_id}", headers=ADMIN)).json()
    for image_id in ("keep", "lose"):
        record = json.loads((root / f"images/{image_id}/image.json").read_text())
        assert record["synced"] is True
        (root / f"images/{image_id}/image.json").write_text(json.dumps({**record, "boot_id": "an-earlier-boot",
                                                                         "synced": False}))
    data = root / "images/lose/data"
    data.chmod(0o644)
    with open(data, "r+b") as f:
        f.seek(MiB + 100)
        f.write(b"not zero any more")  # what a power loss may leave: other bytes than were written
    async with TestClient(TestServer(init_app(settings(root)), host="127.0.0.1")) as store:
        kept = await wait(store, "keep", until=("ready",))
        lost = await wait(store, "lose", until=("failed",))
    assert kept["sha256"] == sha256(source.dir / "a.iso")
    assert lost["error"]["code"] == "storage_failed" and "lost data in a reboot" in lost["error"]["message"]
    assert not (root / "images/lose").exists()
    assert json.loads((root / "images/keep/image.json").read_text())["synced"] is True


async def test_a_download_cut_by_a_reboot_before_it_was_published_fetches_its_unsynced_bytes_again(
        tmp_path, source, monkeypatch):
    """A download's last bytes are not fsync'd before the image is published (with synced false): a reboot
    that comes first may lose them, so the resumed download counts only what its last checkpoint made
    durable, not the whole file, and no image of lost bytes is ever served as ready."""
    root, reached = tmp_path / "store", asyncio.Event()

    async def cut(self, entry, fetched):  # the machine goes down before the image is published
        reached.set()
        await asyncio.Event().wait()

    with monkeypatch.context() as m:
        m.setattr(catalog.Catalog, "_accept", cut)
        async with TestClient(TestServer(init_app(settings(root, checkpoint_bytes=64 * MiB)),
                                         host="127.0.0.1")) as store:
            await put(store, "r1", url=source.url("a.iso"))
            await asyncio.wait_for(reached.wait(), 10)
    state = json.loads((root / "partial/r1/download.json").read_text())
    (root / "partial/r1/download.json").write_text(json.dumps({**state, "boot_id": "an-earlier-boot"}))
    with open(root / "partial/r1/data", "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 1000)  # what a power loss may leave of bytes that were never fsync'd
    async with TestClient(TestServer(init_app(settings(root)), host="127.0.0.1")) as store:
        info = await wait(store, "r1")
    assert (info["state"], info["sha256"]) == ("ready", sha256(source.dir / "a.iso"))
    assert sha256(root / "images/r1/data") == info["sha256"]


async def test_an_upload_ticket_sends_one_image_checked_as_a_download_is(store, tmp_path):
    data = iso_blob(seed=7)
    digest = hashlib.sha256(data).hexdigest()
    put_ticket = {"Authorization": f"Bearer {mint(ticket_key(TOKEN), 'host:h1', 'u1', 60, op='put')[0]}"}
    read_ticket = {"Authorization": f"Bearer {mint(ticket_key(TOKEN), 'host:h1', 'u1', 60)[0]}"}
    what = {"X-Image-Format": "iso", "X-Image-Media-Type": "ISO"}
    r = await store.put("/v1/images/u1/data", data=data, headers={**read_ticket, **what, "X-Image-Sha256": digest})
    assert (r.status, (await r.json())["error"]["message"]) == (401, "ticket refused: it is a read ticket, not a "
                                                                     "put ticket")
    r = await store.put("/v1/images/u1/data", data=data, headers={**put_ticket, **what, "X-Image-Sha256": "0" * 64})
    assert (r.status, (await r.json())["error"]["code"]) == (422, "checksum_mismatch")
    assert (await wait(store, "u1"))["state"] == "failed" and not list((tmp_path / "store" / "partial").iterdir())
    r = await store.put("/v1/images/u1/data", data=data, headers={**put_ticket, **what, "X-Image-Sha256": digest})
    info = await r.json()
    assert (r.status, info["state"], info["sha256"], info["url"]) == (201, "ready", digest, "upload:///host:h1")
    r = await store.put("/v1/images/u1/data", data=data, headers={**put_ticket, **what, "X-Image-Sha256": digest})
    assert r.status == 201  # the same upload again: the image as it is
    assert (await store.get("/v1/images/u1/data", headers=put_ticket)).status == 401  # an upload ticket reads not
    r = await store.get("/v1/images/u1/data", headers=read_ticket)
    assert (r.status, await r.read()) == (200, data)
    r = await store.put("/v1/images/u2", json={"url": "upload:///host:h1"}, headers=ADMIN)
    assert (r.status, (await r.json())["error"]["code"]) == (400, "url_refused")


async def test_an_upload_whose_image_was_deleted_and_sent_again_meanwhile_publishes_nothing(store, tmp_path):
    """An upload runs in its request, so a delete cannot stop it: it removes its folder and the upload writes
    on into an unlinked file. Another upload of the image (its host sending it again) makes the folder anew;
    the first one's end must neither publish that one's bytes under its own record, nor remove them."""
    first, second = iso_blob(seed=10), iso_blob(seed=11)
    gates = {"first": asyncio.Event(), "second": asyncio.Event()}

    async def body(data: bytes, gate: str) -> AsyncIterator[bytes]:
        yield data[:MiB]
        await gates[gate].wait()
        yield data[MiB:]

    async def upload(data: bytes, gate: str) -> tuple[int, dict]:
        r = await store.put("/v1/images/u1/data", data=body(data, gate), headers=upload_headers("u1", data))
        return r.status, await r.json()

    async def receiving() -> None:  # the upload's first MiB is in
        while ((await (await store.get("/v1/images/u1", headers=ADMIN)).json()).get("progress") or {}).get(
                "done", 0) < MiB:
            await asyncio.sleep(0.01)

    one = asyncio.create_task(upload(first, "first"))
    await receiving()
    assert (await store.delete("/v1/images/u1", headers=ADMIN)).status == 204
    two = asyncio.create_task(upload(second, "second"))
    await receiving()
    gates["first"].set()
    status, answer = await one
    assert (status, answer["error"]["code"]) == (404, "image_not_found")
    gates["second"].set()
    status, answer = await two
    assert (status, answer["state"], answer["sha256"]) == (201, "ready", hashlib.sha256(second).hexdigest())
    ticket = mint(ticket_key(TOKEN), "host:h1", "u1", 60)[0]
    assert await (await store.get(f"/v1/images/u1/data?ticket={ticket}")).read() == second
    assert json.loads((tmp_path / "store/images/u1/image.json").read_text())["sha256"] == answer["sha256"]


def upload_headers(image_id: str, data: bytes) -> dict[str, str]:
    ticket = mint(ticket_key(TOKEN), "host:h1", image_id, 60, op="put")[0]
    return {"Authorization": f"Bearer {ticket}", "X-Image-Format": "iso", "X-Image-Media-Type": "ISO",
            "X-Image-Sha256": hashlib.sha256(data).hexdigest()}


async def half_uploaded(store: TestClient, image_id: str, data: bytes) -> tuple[asyncio.Task, asyncio.Event]:
    """An upload of `data` whose first MiB is in; the rest follows once the event returned is set."""
    gate = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield data[:MiB]
        await gate.wait()
        yield data[MiB:]

    url = f"/v1/images/{image_id}"
    upload = asyncio.create_task(store.put(f"{url}/data", data=body(), headers=upload_headers(image_id, data)))
    while (await (await store.get(url, headers=ADMIN)).json()).get("progress", {}).get("done", 0) < MiB:
        await asyncio.sleep(0.01)
    return upload, gate


async def test_an_upload_that_would_eat_into_the_reserve_is_refused_before_its_bytes(tmp_path):
    data, root = iso_blob(seed=8), tmp_path / "store"
    async with TestClient(TestServer(init_app(settings(root, reserve_bytes=1 << 62)), host="127.0.0.1")) as store:
        r = await store.put("/v1/images/u1/data", data=data, headers=upload_headers("u1", data))
        error = (await r.json())["error"]
        assert (r.status, error["code"]) == (507, "insufficient_space")
        assert f"{len(data)} more bytes needed" in error["message"]
        assert (await wait(store, "u1"))["error"]["code"] == "insufficient_space"
    assert list((root / "partial").iterdir()) == [] and list((root / "images").iterdir()) == []


async def test_a_full_disk_during_an_upload_or_a_download_is_insufficient_space_and_leaves_nothing(
        store, source, tmp_path, monkeypatch):
    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(catalog, "_absorb", full)
    monkeypatch.setattr(download.Sink, "write", full)
    data = iso_blob(seed=9)
    r = await store.put("/v1/images/u1/data", data=data, headers=upload_headers("u1", data))
    assert (r.status, (await r.json())["error"]) == (507, {
        "code": "insufficient_space", "field": None, "message": f"{tmp_path / 'store'}: no room left for the image "
                                                                "(receiving: [Errno 28] No space left on device)"})
    info = await wait(store, (await put(store, "d1", url=source.url("a.iso")))["id"])
    assert info["error"] == {"code": "insufficient_space", "message": f"{tmp_path / 'store'}: no room left for the "
                                                                      "image (No space left on device)"}
    assert list((tmp_path / "store/partial").iterdir()) == []


@pytest.mark.parametrize(("err", "status", "code"), [(errno.ENOSPC, 507, "insufficient_space"),
                                                      (errno.EROFS, 500, "storage_failed")])
async def test_a_download_the_disk_cannot_even_start_is_refused_saying_why(store, source, tmp_path, monkeypatch,
                                                                           err, status, code):
    def refused(*_: object) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(layout, "write_json", refused)
    r = await store.put("/v1/images/f1", json={"url": source.url("a.iso")}, headers=ADMIN)
    assert (r.status, (await r.json())["error"]["code"]) == (status, code)
    assert (await store.get("/v1/images/f1", headers=ADMIN)).status == 404
    assert list((tmp_path / "store/partial").iterdir()) == []


async def test_a_full_disk_when_a_ready_image_is_settled_leaves_it_ready_and_the_store_running(store, source,
                                                                                                monkeypatch):
    """The record of a ready image is rewritten once its data is on disk and its md5 known; a disk that is full
    by then leaves the image as it is (settled again at the next start), not a crashed store."""
    tried = threading.Event()

    def full(*_: object) -> None:
        tried.set()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Layout, "rewrite", full)
    await put(store, "f1", url=source.url("a.iso"))
    while not tried.is_set():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # what follows the failed rewrite: done by now
    info = await (await store.get("/v1/images/f1", headers=ADMIN)).json()
    assert (info["state"], info["md5"]) == ("ready", None)
    ticket = mint(ticket_key(TOKEN), "host:h1", "f1", 60)[0]
    r = await store.get(f"/v1/images/f1/data?ticket={ticket}")
    assert (r.status, await r.read()) == (200, (source.dir / "a.iso").read_bytes())


def forbid_listing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From here on any listing of a directory (os.scandir, os.listdir, os.walk, Path.iterdir) fails the test;
    the paths given to os.statvfs are returned as it is called."""
    statvfs, asked = os.statvfs, []

    def listed(*args: object, **kw: object) -> None:
        raise AssertionError(f"a directory was listed: {args[:1]!r}")

    def counted(path: str | Path) -> os.statvfs_result:
        asked.append(str(path))
        return statvfs(path)

    for name in ("scandir", "listdir", "walk"):
        monkeypatch.setattr(os, name, listed)
    monkeypatch.setattr(Path, "iterdir", listed)
    monkeypatch.setattr(os, "statvfs", counted)
    return asked
