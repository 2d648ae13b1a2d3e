"""HTTP routes of the image store: JSON for the coordinator, image data for hosts, Prometheus text for
scrapers (docs/storage.md).

Handlers parse, call the catalog and render. Data is served by aiohttp's FileResponse: single byte
ranges (206, 416), HEAD, sendfile(2) without TLS; the headers carry the image's checksums.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from pydantic import TypeAdapter, ValidationError

from agentkit import SESSION, __version__
from agentkit.metrics import CONTENT_TYPE
from agentkit.web import parse, reply
from imagestore.appkeys import CALLER, CATALOG, METRICS, TALLY
from imagestore.errors import InvalidId, InvalidUpload
from imagestore.middleware import DATA_ROUTE, HEALTH_ROUTE, METRICS_ROUTE, UPLOAD_ROUTE
from imagestore.tally import Tally
from imagestore.wire import AddRequest, Health, ImageId, ImageInfo

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
_ID = TypeAdapter(ImageId)
_LIST = TypeAdapter(list[ImageInfo])


def image_id(request: web.Request) -> str:
    value = request.match_info["image_id"]
    try:
        return _ID.validate_python(value)
    except ValidationError:
        raise InvalidId(field="image_id", value=value) from None


class ServedFile(web.FileResponse):
    """An image's data, counted as a read while it is sent and its bytes once sent whole (sendfile tells no
    less: a read cut off counts none)."""

    def __init__(self, tally: Tally, path: Path, headers: dict[str, str]):
        super().__init__(path, headers=headers)
        self.tally = tally

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        with self.tally.transfer("read"):
            writer = await super().prepare(request)
        if request.method != "HEAD" and self.status in (200, 206):
            self.tally.served += self.content_length or 0
        return writer


@routes.get("/health", name=HEALTH_ROUTE)
async def health(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG]
    return reply(Health(status="ok", version=__version__, session=SESSION, root=str(catalog.layout.root),
                        capacity=await catalog.capacity()))


@routes.get("/metrics", name=METRICS_ROUTE)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text (format 0.0.4), read from memory and one statvfs: a scrape stays cheap."""
    return web.Response(body=request.app[METRICS].render().encode(), headers={"Content-Type": CONTENT_TYPE})


@routes.get("/v1/capacity")
async def capacity(request: web.Request) -> web.Response:
    return reply(await request.app[CATALOG].capacity())


@routes.get("/v1/images")
async def list_images(request: web.Request) -> web.Response:
    return web.json_response(_LIST.dump_python(request.app[CATALOG].list(), mode="json"))


@routes.put("/v1/images/{image_id}")
async def add_image(request: web.Request) -> web.Response:
    info = request.app[CATALOG].add(image_id(request), await parse(request, AddRequest))
    return reply(info, 200 if info.state == "ready" else 202)


@routes.get("/v1/images/{image_id}")
async def show_image(request: web.Request) -> web.Response:
    return reply(request.app[CATALOG].get(image_id(request)))


@routes.delete("/v1/images/{image_id}")
async def delete_image(request: web.Request) -> web.Response:
    await request.app[CATALOG].delete(image_id(request))
    return web.Response(status=204)


@routes.route("GET", "/v1/images/{image_id}/data", name=DATA_ROUTE)
async def image_data(request: web.Request) -> web.StreamResponse:
    """The image's bytes (HEAD too); `Repr-Digest` (RFC 9530) and `X-Image-Sha256` name the whole file."""
    path, record = request.app[CATALOG].ready(image_id(request))
    digest = base64.b64encode(bytes.fromhex(record.sha256)).decode()
    log.info("serving image", extra={"fields": {"image": record.id, "caller": request[CALLER],
                                                 "range": request.headers.get("Range")}})
    return ServedFile(request.app[TALLY], path, headers={
        "Content-Type": "application/octet-stream", "Cache-Control": "no-store",
        "Repr-Digest": f"sha-256=:{digest}:", "X-Image-Sha256": record.sha256,
        "X-Image-Format": record.format, "X-Image-Virtual-Size": str(record.virtual_size),
        **({"X-Image-Md5": record.md5} if record.md5 else {})})


@routes.route("PUT", "/v1/images/{image_id}/data", name=UPLOAD_ROUTE)
async def upload_image(request: web.Request) -> web.Response:
    """An image's bytes from its uploader (an upload ticket): `X-Image-Sha256` names them, `X-Image-Format`
    and `X-Image-Media-Type` say what they are; checked and published as a download is."""
    try:
        req = AddRequest(url=f"upload:///{request[CALLER]}", format=request.headers.get("X-Image-Format", "auto"),
                         media_type=request.headers.get("X-Image-Media-Type"),
                         sha256=request.headers.get("X-Image-Sha256"))
    except ValidationError as e:
        raise InvalidUpload(reason=e.errors()[0]["msg"]) from None
    if req.sha256 is None:
        raise InvalidUpload(reason="X-Image-Sha256 is required: the store checks the bytes against it")
    info = await request.app[CATALOG].upload(image_id(request), req, request.content.iter_chunked(1 << 20),
                                             request.content_length)
    return reply(info, 201)
