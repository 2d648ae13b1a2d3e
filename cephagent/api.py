"""HTTP routes of the cephagent: JSON in and out, validated by the `cephagent.wire` models.

Handlers only parse, call the blocking driver in a worker thread (cephagent.workers) and serialise; the rules live in
`cluster`, `volumes` and `images`. `/metrics` renders counts kept in memory and makes no librados call, so a scrape
never waits for Ceph nor takes a thread. See docs/ceph.md for the endpoint list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from agentkit import SESSION, __version__
from agentkit.metrics import CONTENT_TYPE
from agentkit.web import parse, reply
from cephagent.appkeys import CLUSTER, IMAGES, METRICS, SETTINGS, TASKS, VOLUMES, WORKERS
from cephagent.errors import InvalidRequest
from cephagent.wire import (
    CloneRequest,
    CreateVolumeRequest,
    ImageImportRequest,
    Name,
    PoolRequest,
    ResizeRequest,
    SnapshotRequest,
    TaskRef,
)
from cephagent.workers import Kind

_NAME = TypeAdapter(Name)
routes = web.RouteTableDef()


def _name(key: str, value: str) -> str:
    try:
        return _NAME.validate_python(value)
    except ValidationError:
        raise InvalidRequest(field=key, message=f"{key} {value!r} is not a valid name") from None


def names(request: web.Request, *keys: str) -> list[str]:
    """Path parameters that must be pool/image/snapshot names."""
    return [_name(key, request.match_info[key]) for key in keys]


async def blocking(request: web.Request, kind: Kind, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` on the worker threads of its kind: what may take minutes (a flatten, a rollback, a shrink,
    removing a large image) is `long`, so that it never holds up `/health` and the reads (cephagent.workers)."""
    return await request.app[WORKERS].run(kind, fn, *args)


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    fsid = await blocking(request, "quick", cluster.fsid)
    return web.json_response({"status": "ok", "fsid": fsid, "client": cluster.client, "version": __version__,
                              "session": SESSION})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text (format 0.0.4), for the agent's `token` or the scrapers' `metrics_token`."""
    return web.Response(body=request.app[METRICS].render().encode(), headers={"Content-Type": CONTENT_TYPE})


@routes.get("/v1/cluster")
async def cluster_info(request: web.Request) -> web.Response:
    return reply(await blocking(request, "quick", request.app[CLUSTER].info))


@routes.post("/v1/pools/check-or-create")
async def check_or_create_pool(request: web.Request) -> web.Response:
    result = await blocking(request, "quick", request.app[CLUSTER].ensure_pool, await parse(request, PoolRequest))
    return reply(result, 201 if result.created else 200)


@routes.get("/v1/secret")
async def secret(request: web.Request) -> web.Response:
    """The VM user's key; `?pool=`/`?read_only_pool=` (repeated) extend its caps to those pools."""
    pools = [_name("pool", p) for p in request.query.getall("pool", [])]
    read_only = [_name("read_only_pool", p) for p in request.query.getall("read_only_pool", [])]
    if not pools:
        raise InvalidRequest(field="pool", message="name at least one pool the VM user works in")
    vm_client = request.app[SETTINGS].vm_client
    return reply(await blocking(request, "quick", request.app[CLUSTER].secret, vm_client, pools, read_only))


@routes.post("/v1/images")
async def import_image(request: web.Request) -> web.Response:
    """A retry of a queued or running import gets its task; an image another client is importing is refused here
    (409, for the coordinator to ask again), not as a failed task."""
    req = await parse(request, ImageImportRequest)
    images, tasks, key = request.app[IMAGES], request.app[TASKS], f"{req.pool}/{req.name}"
    if tasks.ongoing(key) is None:  # our own import has the image open itself
        await blocking(request, "quick", images.check_unclaimed, req.pool, req.name)
    task = tasks.submit("image-import", key, lambda progress: images.import_url(req, progress))
    location = request.app.router["task"].url_for(task_id=task.id)
    return web.json_response(TaskRef(task_id=task.id).model_dump(), status=202, headers={"Location": str(location)})


@routes.get("/v1/tasks/{task_id}", name="task")
async def task_info(request: web.Request) -> web.Response:
    return reply(request.app[TASKS].get(request.match_info["task_id"]).info())


@routes.get("/v1/images/{pool}/{name}")
async def image_info(request: web.Request) -> web.Response:
    return reply(await blocking(request, "quick", request.app[IMAGES].info, *names(request, "pool", "name")))


@routes.delete("/v1/images/{pool}/{name}")
async def delete_image(request: web.Request) -> web.Response:
    """Its import, queued or running, is cancelled first and has ended before the image is removed."""
    pool, name = names(request, "pool", "name")
    await request.app[TASKS].cancel(f"{pool}/{name}", "the image was deleted")
    await blocking(request, "long", request.app[IMAGES].delete, pool, name)
    return web.Response(status=204)


@routes.post("/v1/volumes")
async def create_volume(request: web.Request) -> web.Response:
    req = await parse(request, CreateVolumeRequest)
    return reply(await blocking(request, "quick", request.app[VOLUMES].create, req), 201)


@routes.post("/v1/volumes/clone")
async def clone_volume(request: web.Request) -> web.Response:
    req = await parse(request, CloneRequest)
    return reply(await blocking(request, "quick", request.app[VOLUMES].clone, req), 201)


@routes.get("/v1/volumes/{pool}/{name}")
async def volume_info(request: web.Request) -> web.Response:
    return reply(await blocking(request, "quick", request.app[VOLUMES].info, *names(request, "pool", "name")))


@routes.delete("/v1/volumes/{pool}/{name}")
async def delete_volume(request: web.Request) -> web.Response:
    await blocking(request, "long", request.app[VOLUMES].delete, *names(request, "pool", "name"))
    return web.Response(status=204)


@routes.post("/v1/volumes/{pool}/{name}/resize")
async def resize_volume(request: web.Request) -> web.Response:
    pool, name = names(request, "pool", "name")
    req = await parse(request, ResizeRequest)
    return reply(await blocking(request, "long", request.app[VOLUMES].resize, pool, name, req))


@routes.post("/v1/volumes/{pool}/{name}/flatten")
async def flatten_volume(request: web.Request) -> web.Response:
    return reply(await blocking(request, "long", request.app[VOLUMES].flatten, *names(request, "pool", "name")))


@routes.post("/v1/volumes/{pool}/{name}/snapshots")
async def create_snapshot(request: web.Request) -> web.Response:
    pool, name = names(request, "pool", "name")
    req = await parse(request, SnapshotRequest)
    return reply(await blocking(request, "quick", request.app[VOLUMES].create_snapshot, pool, name, req), 201)


@routes.delete("/v1/volumes/{pool}/{name}/snapshots/{snap}")
async def delete_snapshot(request: web.Request) -> web.Response:
    pool, name, snap = names(request, "pool", "name", "snap")
    await blocking(request, "quick", request.app[VOLUMES].delete_snapshot, pool, name, snap)
    return web.Response(status=204)


@routes.post("/v1/volumes/{pool}/{name}/snapshots/{snap}/rollback")
async def rollback_snapshot(request: web.Request) -> web.Response:
    pool, name, snap = names(request, "pool", "name", "snap")
    return reply(await blocking(request, "long", request.app[VOLUMES].rollback, pool, name, snap))
