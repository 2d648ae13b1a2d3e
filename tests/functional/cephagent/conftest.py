"""Fixtures of the cephagent tests: one real Ceph cluster (mon + memstore osd + mgr) for this directory,
the agent's connection to it, two pools and the test image imported once (images: ../conftest.py).

The cluster is package-scoped so it starts once (3-6 s) rather than once per module (the shared `ceph`
fixture is per module). In a directory without __init__.py pytest 8 ends package scope with the
session, so during a whole-suite run the idle cluster (about 1% of a core) stays up until the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from cephagent.cluster import CephCluster
from cephagent.images import Images
from cephagent.sources import Sources
from cephagent.volumes import Volumes
from cephagent.wire import ImageImportRequest, ImageInfo, PoolRequest
from cephagent.workers import Workers
from testbed.ceph import CephCluster as TestCluster
from testbed.netns import Run

IMAGE_POOL, VOLUME_POOL = "hsimages", "hsvolumes"


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
def base_image(cluster, volumes, pools, image_dir) -> ImageInfo:
    """small.qcow2 imported once (file://) as `hsimages/hsbase`, the source of root volumes."""
    async def do_import() -> ImageInfo:
        async with aiohttp.ClientSession() as session:
            images = Images(cluster, volumes, Sources(session, [image_dir], 60), Workers(4, 2),
                            image_dir / "staging")
            req = ImageImportRequest(pool=IMAGE_POOL, name="hsbase", url=f"file://{image_dir}/small.qcow2")
            return await images.import_url(req, lambda _p: None)
    return asyncio.run(do_import())
