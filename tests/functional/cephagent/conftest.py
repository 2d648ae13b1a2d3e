"""Fixtures of the cephagent tests: one real Ceph cluster (mon + memstore osd + mgr) for this directory,
the agent's connection to it, two pools and a small qcow2 image.

The cluster is package-scoped so it starts once (3-6 s) rather than once per module. In a directory
without __init__.py pytest 8 ends package scope with the session, so during a whole-suite run the idle
cluster (about 1% of a core) stays up until the end and is removed then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from agentkit.proc import run
from cephagent.cluster import CephCluster
from cephagent.images import Images
from cephagent.sources import Sources
from cephagent.volumes import Volumes
from cephagent.wire import ImageImportRequest, ImageInfo, PoolRequest
from testbed.ceph import CephCluster as TestCluster
from testbed.netns import Run

MiB = 1 << 20
IMAGE_POOL, VOLUME_POOL = "hsimages", "hsvolumes"
# (offset, length, byte) written into the test qcow2; everything else reads as zeros
PATTERN = [(0, 3 * MiB, 0xAB), (40 * MiB, 1 * MiB, 0xCD)]
QCOW2_SIZE = 64 * MiB


@pytest.fixture(scope="package")
def ceph() -> Iterator[TestCluster]:
    with Run() as r:
        c = TestCluster(r).start()
        try:
            yield c
        finally:
            c.stop()


@pytest.fixture(scope="package")
def cluster(ceph) -> Iterator[CephCluster]:
    c = CephCluster(str(ceph.conf), ceph.client)
    c.connect()
    yield c
    c.close()


@pytest.fixture(scope="package")
def pools(cluster) -> tuple[str, str]:
    for name in (IMAGE_POOL, VOLUME_POOL):
        cluster.ensure_pool(PoolRequest(name=name))
    return IMAGE_POOL, VOLUME_POOL


@pytest.fixture(scope="package")
def volumes(cluster) -> Volumes:
    return Volumes(cluster)


@pytest.fixture(scope="package")
def image_dir(tmp_path_factory):
    """A directory with `small.qcow2` (64 MiB virtual, 4 MiB of data) and its raw twin `small.raw`."""
    d = tmp_path_factory.mktemp("images")
    qcow2 = d / "small.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), str(QCOW2_SIZE)])
    writes = [a for off, length, byte in PATTERN for a in ("-c", f"write -P {byte} {off} {length}")]
    run(["qemu-io", "-f", "qcow2", *writes, str(qcow2)])
    run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(qcow2), str(d / "small.raw")])
    return d


@pytest.fixture(scope="package")
def expected():
    """expected(offset, length): what the test image holds there."""
    def at(offset: int, length: int) -> bytes:
        out = bytearray(length)
        for off, size, byte in PATTERN:
            lo, hi = max(off, offset), min(off + size, offset + length)
            if lo < hi:
                out[lo - offset:hi - offset] = bytes([byte]) * (hi - lo)
        return bytes(out)
    return at


@pytest.fixture(scope="package")
def base_image(cluster, volumes, pools, image_dir) -> ImageInfo:
    """small.qcow2 imported once (file://) as `hsimages/hsbase`, the source of root volumes."""
    async def do_import() -> ImageInfo:
        async with aiohttp.ClientSession() as session:
            images = Images(cluster, volumes, Sources(session, [image_dir], 60), image_dir / "staging")
            req = ImageImportRequest(pool=IMAGE_POOL, name="hsbase", url=f"file://{image_dir}/small.qcow2")
            return await images.import_url(req, lambda _p: None)
    return asyncio.run(do_import())
