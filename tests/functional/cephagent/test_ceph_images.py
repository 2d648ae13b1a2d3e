"""Image import on a real cluster: file:// and http(s) sources, qcow2 conversion, thin writes, the
protected snapshot, idempotent retries, and failures that leave nothing behind."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import pytest
import rbd
from aiohttp import web
from aiohttp.test_utils import TestServer

from agentkit.proc import run
from cephagent.cluster import CephCluster
from cephagent.errors import (
    AlreadyExists,
    HasDependants,
    ImageNotFound,
    ImportFailed,
    ImportInProgress,
    PoolNotFound,
)
from cephagent.images import MARKER, Images
from cephagent.sources import Sources
from cephagent.volumes import Volumes
from cephagent.wire import (
    CloneRequest,
    CreateVolumeRequest,
    ImageImportRequest,
    ParentSpec,
    PoolRequest,
    SnapshotInfo,
)
from cephagent.workers import Workers

pytestmark = pytest.mark.real
MiB = 1 << 20
POOL = "hsimages"


@pytest.fixture
async def images(cluster, volumes, pools, image_dir, tmp_path):
    async with aiohttp.ClientSession() as session:
        yield Images(cluster, volumes, Sources(session, [image_dir], 60), Workers(4, 2), tmp_path / "staging")


@pytest.fixture
async def web_images(image_dir):
    """A loopback HTTP server: /<file> with Content-Length, /chunked/<file> without, 404 otherwise."""
    async def plain(request: web.Request) -> web.StreamResponse:
        path = image_dir / request.match_info["file"]
        return web.FileResponse(path) if path.is_file() else web.Response(status=404)

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        with open(image_dir / request.match_info["file"], "rb") as f:
            while piece := f.read(3 * MiB + 7):
                await resp.write(piece)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.add_routes([web.get("/chunked/{file}", chunked), web.get("/{file}", plain)])
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def check_content(volumes, name: str, expected, pool: str = POOL) -> None:
    with volumes.open(pool, name, read_only=True) as image:
        for off in (0, 4 * MiB, 40 * MiB, 60 * MiB):
            assert image.read(off, 4 * MiB) == expected(off, 4 * MiB), f"{name} differs at {off}"


def request(name: str, url: str, fmt: str = "auto") -> ImageImportRequest:
    return ImageImportRequest(pool=POOL, name=name, url=url, format=fmt)


async def test_qcow2_file_lands_as_thin_image_with_protected_snapshot(images, volumes, image_dir, expected,
                                                                     tmp_path):
    phases: list[str] = []
    info = await images.import_url(request("hsq1", f"file://{image_dir}/small.qcow2"),
                                   lambda p: phases.append(p.phase))
    assert (info.size, info.snapshot, info.children) == (64 * MiB, "base", [])
    vol = volumes.info(POOL, "hsq1")
    assert vol.snapshots == [SnapshotInfo(name="base", size=64 * MiB, protected=True)]
    assert vol.used == 8 * MiB  # only the two objects holding data were written
    check_content(volumes, "hsq1", expected)
    assert phases[0] == "convert" and phases[-1] == "write"
    assert list((tmp_path / "staging").iterdir()) == []  # the raw conversion is gone

    with volumes.open(POOL, "hsq1", read_only=True) as image:
        image_id = image.id()
    assert await images.import_url(request("hsq1", f"file://{image_dir}/small.qcow2"), lambda p: None) == info
    with volumes.open(POOL, "hsq1", read_only=True) as image:
        assert image.id() == image_id  # a retried import returns the image, it does not redo it
    assert images.delete(POOL, "hsq1") and not images.delete(POOL, "hsq1")


@pytest.mark.parametrize("path, phases", [
    ("/small.raw", ["write"]),                          # raw with a length: streamed straight into RBD
    ("/chunked/small.raw", ["download", "write"]),      # no length: spooled first
    ("/small.qcow2", ["download", "convert", "write"]),  # qcow2 needs random access: spooled, converted
])
async def test_http_sources(images, volumes, web_images, expected, path, phases):
    seen: list[str] = []
    name = "hsweb" + path.replace("/", "-").replace(".", "-")
    await images.import_url(request(name, str(web_images.make_url(path))),
                            lambda p: seen.append(p.phase) if p.phase not in seen else None)
    try:
        assert seen == phases
        assert volumes.info(POOL, name).used == 8 * MiB
        check_content(volumes, name, expected)
    finally:
        images.delete(POOL, name)


async def test_failed_imports_name_the_cause_and_leave_nothing(images, volumes, web_images, image_dir):
    base = web_images.make_url("/")
    cases = [
        (f"http://user:s3cret@{base.host}:{base.port}/nothere.raw?token=t0k", "HTTP 404"),
        ("file:///etc/hostname", "outside the directories file:// URLs may read"),
        (f"file://{image_dir}/missing.qcow2", "no such file"),
    ]
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image_dir / "small.raw"), "-F", "raw",
         str(image_dir / "backed.qcow2")])
    cases.append((f"file://{image_dir}/backed.qcow2", "backing file"))
    for url, why in cases:
        with pytest.raises(ImportFailed, match=why) as e:
            await images.import_url(request("hsfail", url), lambda p: None)
        assert "s3cret" not in str(e.value) and "t0k" not in str(e.value)
        with pytest.raises(ImageNotFound):
            volumes.info(POOL, "hsfail")
    with pytest.raises(ImportFailed, match="declared format qcow2, but the data has no qcow2 header"):
        await images.import_url(request("hsfail", f"file://{image_dir}/small.raw", "qcow2"), lambda p: None)
    with pytest.raises(PoolNotFound, match="'hsnopool'"):
        await images.import_url(ImageImportRequest(pool="hsnopool", name="x", url=f"file://{image_dir}/small.raw"),
                                lambda p: None)


async def test_a_length_past_what_a_volume_may_be_is_refused(images):
    """A source announcing 2^64 - 1 bytes: librbd made an image of that size (and 2^52 was its EINVAL)."""
    async def lying(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % ((1 << 64) - 1) + b"\1" * 4096)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(lying, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ImportFailed, match="the image is 18446744073709551615 bytes, more than 1125899906842624"):
            await images.import_url(request("hslie", f"http://127.0.0.1:{port}/disk.raw"), lambda p: None)
    finally:
        server.close()


async def test_interrupted_import_is_redone(cluster, images, volumes, image_dir, expected):
    with cluster.ioctx(POOL) as io:  # what a crash mid-import leaves: a marked, partly written image
        rbd.RBD().create(io, "hsleft", 4 * MiB)
        with rbd.Image(io, "hsleft") as image:
            image.metadata_set(MARKER, "incomplete")
            image.write(b"garbage", 0)
    with pytest.raises(ImageNotFound):
        images.info(POOL, "hsleft")
    info = await images.import_url(request("hsleft", f"file://{image_dir}/small.raw"), lambda p: None)
    assert info.size == 64 * MiB
    check_content(volumes, "hsleft", expected)
    with volumes.open(POOL, "hsleft", read_only=True) as image:
        assert MARKER not in dict(image.metadata_list())
    images.delete(POOL, "hsleft")


async def test_an_import_another_agent_is_writing_is_left_to_it(cluster, images, volumes, image_dir, expected):
    """Two cephagents of one cluster asked for one image (the coordinator failed over from an agent it could not
    reach): the second refuses while the first has the image open, where it removed what the first was writing."""
    with cluster.ioctx(POOL) as io:
        rbd.RBD().create(io, "hsboth", 4 * MiB)
        with rbd.Image(io, "hsboth") as writing:  # the other agent's import, open read-write: a watcher
            writing.metadata_set(MARKER, "incomplete")
            writing.write(b"theirs", 0)
            with pytest.raises(ImportInProgress, match=f"{POOL}/hsboth is being imported by another client"):
                await images.import_url(request("hsboth", f"file://{image_dir}/small.raw"), lambda p: None)
            assert writing.read(0, 6) == b"theirs"
    info = await images.import_url(request("hsboth", f"file://{image_dir}/small.raw"), lambda p: None)
    assert info.size == 64 * MiB  # once nobody writes it, what is left is an interrupted import: redone
    check_content(volumes, "hsboth", expected)
    images.delete(POOL, "hsboth")


def full_flags(cluster: CephCluster, pool: str, full: bool) -> None:
    """Until the osdmap says `pool` is full (or no longer is): the mon sees usage from the mgr's reports."""
    deadline = time.monotonic() + 60
    while (cluster.full(pool) is not None) != full:
        assert time.monotonic() < deadline, f"pool {pool} never became {'full' if full else 'writable'}"
        time.sleep(0.2)


async def test_an_import_into_a_full_pool_says_so_and_is_redone_once_there_is_room(ceph, cluster, image_dir,
                                                                                  tmp_path, expected):
    """Writes to a full pool wait until they time out: the import failed as 'Ceph cluster unavailable: RBD
    operation timeout', never naming the full pool, and without trying to remove what it had written."""
    cluster.ensure_pool(PoolRequest(name="hsfull"))
    with cluster.ioctx("hsfull") as io:
        io.write_full("filler", b"\1" * 8 * MiB)
    cluster.command("osd pool set-quota", pool="hsfull", field="max_bytes", val=str(4 * MiB))
    full_flags(cluster, "hsfull", True)
    impatient = CephCluster(str(ceph.conf), ceph.client, timeout=3)
    impatient.connect()
    try:
        async with aiohttp.ClientSession() as session:
            images = Images(impatient, Volumes(impatient), Sources(session, [image_dir], 60), Workers(4, 2),
                            tmp_path)
            req = ImageImportRequest(pool="hsfull", name="hsroom", url=f"file://{image_dir}/small.raw")
            with pytest.raises(ImportFailed, match=r"timed? ?out.*; pool hsfull is full \(full,full_quota\): raise "
                               "its quota or add OSDs, then import again"):
                await images.import_url(req, lambda p: None)
            cluster.command("osd pool set-quota", pool="hsfull", field="max_bytes", val="0")
            full_flags(cluster, "hsfull", False)
            assert (await images.import_url(req, lambda p: None)).size == 64 * MiB
        check_content(Volumes(cluster), "hsroom", expected, "hsfull")
    finally:
        impatient.close()


class Killed(BaseException):
    """The agent killed between two steps of an import (nothing in it handles this)."""


class KilledAfterCreate:
    """librbd's RBD whose `create` makes the image, then the agent dies before the next step."""

    def __init__(self, real: rbd.RBD):
        self.real = real

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def create(self, *args, **kw) -> None:
        self.real.create(*args, **kw)
        raise Killed()


async def test_an_import_killed_as_its_image_was_created_is_redone(cluster, images, volumes, image_dir, expected,
                                                                  monkeypatch):
    """Killed between creating the image and marking it incomplete: the import submitted again (its task died
    with the agent) makes the image, where it refused the unmarked one as not an imported image for good; a
    delete instead leaves nothing of it."""
    req = request("hscut", f"file://{image_dir}/small.raw")

    async def killed() -> None:
        with monkeypatch.context() as m, pytest.raises(Killed):
            m.setattr(volumes, "rbd", KilledAfterCreate(volumes.rbd))
            await images.import_url(req, lambda p: None)

    def left() -> list[str]:
        with cluster.ioctx(POOL) as io:
            return [n for n in rbd.RBD().list(io) if n.startswith("hscut")]

    await killed()
    info = await images.import_url(req, lambda p: None)
    assert (info.size, info.snapshot) == (64 * MiB, "base") and left() == ["hscut"]
    check_content(volumes, "hscut", expected)
    assert images.delete(POOL, "hscut")
    await killed()
    assert not images.delete(POOL, "hscut") and left() == []


async def test_name_of_a_plain_volume_is_not_overwritten(images, volumes, image_dir):
    volumes.create(CreateVolumeRequest(pool=POOL, name="hsplain", size=MiB))
    with pytest.raises(AlreadyExists, match="not an imported image"):
        await images.import_url(request("hsplain", f"file://{image_dir}/small.raw"), lambda p: None)
    assert volumes.info(POOL, "hsplain").size == MiB
    volumes.delete(POOL, "hsplain")


async def test_image_is_deleted_only_after_its_clones(images, volumes, pools, image_dir):
    await images.import_url(request("hsdel", f"file://{image_dir}/small.raw"), lambda p: None)
    volumes.clone(CloneRequest(pool=pools[1], name="hsdel-root", source=ParentSpec(pool=POOL, image="hsdel")))
    with pytest.raises(HasDependants, match=f"{POOL}/hsdel has 1 clone.*{pools[1]}/hsdel-root"):
        images.delete(POOL, "hsdel")
    assert images.info(POOL, "hsdel").children == [f"{pools[1]}/hsdel-root"]
    volumes.delete(pools[1], "hsdel-root")
    assert images.delete(POOL, "hsdel")
    with pytest.raises(ImageNotFound):
        volumes.info(POOL, "hsdel")


async def test_a_raw_file_of_no_whole_sectors_lands_as_whole_sectors_and_so_do_its_clones(cluster, volumes, pools,
                                                                                          tmp_path):
    """A volume is whole sectors: the image is made of the next multiple of 512, its tail reading as zeros."""
    data = os.urandom(MiB + 1000)
    (tmp_path / "odd.raw").write_bytes(data)
    async with aiohttp.ClientSession() as session:
        images = Images(cluster, volumes, Sources(session, [tmp_path], 60), Workers(2, 1), tmp_path / "staging")
        info = await images.import_url(request("hsodd", f"file://{tmp_path}/odd.raw"), lambda p: None)
        try:
            assert info.size == MiB + 1024
            with volumes.open(POOL, "hsodd", read_only=True) as image:
                assert image.read(0, MiB + 1024) == data + bytes(24)
            clone = volumes.clone(CloneRequest(pool=pools[1], name="hsodd-root", source=ParentSpec(pool=POOL,
                                                                                                 image="hsodd")))
            assert clone.size == MiB + 1024
            volumes.delete(pools[1], "hsodd-root")
        finally:
            images.delete(POOL, "hsodd")
