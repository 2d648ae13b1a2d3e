"""The cephagent's /metrics on a loopback test server (no Ceph): who may read it, and what an operator of a Ceph
backend watches there: requests, worker threads per kind, imports and tasks, bytes imported."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentkit import SESSION, __version__
from cephagent.appkeys import CLUSTER, IMAGES, METRICS, TASKS, WORKERS
from cephagent.images import AioWriter, Images
from cephagent.main import ceph_ctx, init_app
from cephagent.settings import CephAgentSettings
from cephagent.tasks import Tasks
from cephagent.wire import ImageInfo
from cephagent.workers import Workers
from testbed import promtext

TOKEN, SCRAPER = "t" * 24, "m" * 24
AGENT, SCRAPES = {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Bearer {SCRAPER}"}


class Agent(SimpleNamespace):
    client: TestClient
    workers: Workers
    tasks: Tasks
    images: Images


@pytest.fixture
async def agent(tmp_path) -> AsyncIterator[Agent]:
    """The process's own app (middlewares, routes, series), its Ceph side stood in for: no cluster to connect."""
    app = init_app(CephAgentSettings(token=TOKEN, metrics_token=SCRAPER, tmp_dir=str(tmp_path)))
    app.cleanup_ctx.remove(ceph_ctx)
    app[CLUSTER] = SimpleNamespace(fsid=lambda: "f5", client="client.admin")
    app[WORKERS], app[TASKS] = Workers(long_operations=1, imports=1), Tasks(concurrency=1)
    app[IMAGES] = Images(None, None, None, app[WORKERS], tmp_path)
    for counted in (app[WORKERS], app[TASKS], app[IMAGES]):
        counted.register(app[METRICS])
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Agent(client=client, workers=app[WORKERS], tasks=app[TASKS], images=app[IMAGES])
        await app[TASKS].close()
        app[WORKERS].close()


async def scrape(agent: Agent) -> str:
    r = await agent.client.get("/metrics", headers=SCRAPES)
    assert (r.status, r.headers["Content-Type"]) == (200, "text/plain; version=0.0.4; charset=utf-8")
    return await r.text()


async def test_the_metrics_token_reads_metrics_and_health_and_nothing_else(agent):
    """A scraper's credential can read no volume, image or the VM user's key, nor change anything."""
    client = agent.client
    assert (await client.get("/metrics", headers=SCRAPES)).status == 200
    assert await (await client.get("/health", headers=SCRAPES)).json() == {
        "status": "ok", "fsid": "f5", "client": "client.admin", "version": __version__, "session": SESSION}
    for method, path in (("GET", "/v1/cluster"), ("GET", "/v1/secret?pool=p"), ("GET", "/v1/volumes/p/v"),
                         ("POST", "/v1/volumes"), ("DELETE", "/v1/volumes/p/v"), ("GET", "/v1/images/p/i"),
                         ("POST", "/v1/images"), ("GET", "/v1/tasks/x"), ("POST", "/v1/pools/check-or-create"),
                         ("GET", "/metrics/"), ("GET", "/nothing")):
        r = await client.request(method, path, headers=SCRAPES, json={})
        assert (r.status, (await r.json())["error"]["code"]) == (401, "unauthorized"), (method, path)
    assert (await client.get("/metrics", headers=AGENT)).status == 200  # the agent's own token reads it too
    assert (await client.get("/metrics")).status == 401


async def test_without_a_metrics_token_only_the_agents_token_reads_metrics(tmp_path):
    app = init_app(CephAgentSettings(token=TOKEN, tmp_dir=str(tmp_path)))
    app.cleanup_ctx.remove(ceph_ctx)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/metrics", headers=SCRAPES)).status == 401
        assert (await client.get("/metrics", headers=AGENT)).status == 200


async def test_every_request_is_counted_per_route_method_and_status(agent):
    await agent.client.get("/v1/volumes/p/v", headers=SCRAPES)
    await agent.client.get("/v1/volumes/p/v", headers=SCRAPES)
    await agent.client.get("/health", headers=AGENT)
    text = await scrape(agent)
    requests = "hoststack_http_requests_total"
    assert promtext.value(text, requests, route="/v1/volumes/{pool}/{name}", method="GET", code="401") == 2
    assert promtext.value(text, requests, route="/health", method="GET", code="200") == 1
    assert promtext.value(text, "hoststack_http_request_seconds_count", route="/health", method="GET") == 1


async def test_worker_threads_per_kind_show_busy_and_queued_and_a_cancelled_wait_leaves_none(agent):
    """Two flattens on one long_operations thread: one holds it, one waits; /health's quick call is apart."""
    release = threading.Event()
    calls = [asyncio.ensure_future(agent.workers.run("long", release.wait, 10)) for _ in range(2)]
    async with asyncio.timeout(5):
        while agent.workers.busy["long"] < 1:
            await asyncio.sleep(0.01)
    text = await scrape(agent)
    assert [promtext.value(text, "hoststack_ceph_workers_busy", kind=k) for k in ("quick", "long", "import")] == \
        [0, 1, 0]
    assert [promtext.value(text, "hoststack_ceph_workers_queued", kind=k) for k in ("quick", "long", "import")] == \
        [0, 1, 0]
    calls[1].cancel()  # its client gave up while it waited: it never runs, and waits no more
    await asyncio.wait({calls[1]})
    assert promtext.value(await scrape(agent), "hoststack_ceph_workers_queued", kind="long") == 0
    release.set()
    assert await calls[0] is True
    text = await scrape(agent)
    assert promtext.value(text, "hoststack_ceph_workers_busy", kind="long") == 0


async def test_imports_running_and_queued_and_finished_tasks_by_state(agent):
    release = asyncio.Event()

    async def work(report):
        await release.wait()
        return ImageInfo(pool="p", name="i", size=4)

    first, second = (agent.tasks.submit("image-import", f"p/i{n}", work) for n in range(2))
    async with asyncio.timeout(5):
        while first.state != "running":
            await asyncio.sleep(0.01)

    def tasks(text: str) -> list[float]:
        return [promtext.value(text, "hoststack_ceph_tasks", kind="image-import", state=s)
                for s in ("queued", "running", "succeeded", "failed")]

    assert tasks(await scrape(agent)) == [1, 1, 0, 0]
    release.set()
    async with asyncio.timeout(5):
        while second.state != "succeeded":
            await asyncio.sleep(0.01)
    assert tasks(await scrape(agent)) == [0, 0, 2, 0]


class FakeImage:
    """librbd's aio_write completing at once (success, or the errno given)."""

    def __init__(self, rv: int = 0):
        self.rv = rv

    def aio_write(self, data: bytes, offset: int, done) -> None:
        done(SimpleNamespace(get_return_value=lambda: self.rv))

    def flush(self) -> None:
        pass


async def test_bytes_imported_count_what_reached_rbd_not_zeros_nor_failed_writes(agent):
    writer = AioWriter(FakeImage(), 4, agent.images.written)
    for data in (b"\1" * 4096, b"\0" * 8192, b"\2" * 100):
        writer.write(data, 0)
    writer.finish()
    AioWriter(FakeImage(rv=-28), 4, agent.images.written).write(b"\3" * 512, 0)  # ENOSPC: not imported
    text = await scrape(agent)
    assert promtext.value(text, "hoststack_ceph_import_written_bytes_total") == 4196
    promtext.families(text)  # the whole answer reads as a scraper reads it
