"""HTTP routes of the image store: JSON for the coordinator, image data for hosts (docs/storage.md).

Handlers parse, call the catalog and render. Data is served by aiohttp's FileResponse: single byte
ranges (206, 416), HEAD, sendfile(2) without TLS; the headers carry the image's checksums.
"""

from __future__ import annotations

import base64
import logging

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from agentkit import __version__
from agentkit.web import parse, reply
from imagestore.appkeys import CALLER, CATALOG
from imagestore.errors import InvalidId, InvalidUpload
from imagestore.middleware import DATA_ROUTE, UPLOAD_ROUTE
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


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG]
    return reply(Health(status="ok", version=__version__, root=str(catalog.layout.root),
                        capacity=await catalog.capacity()))


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
    return web.FileResponse(path, headers={
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
