"""The host's side of docs/storage.md's fetch API: a read ticket from the coordinator, checked."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agentkit.model import ImageRef
from kvmagent.errors import ImageFetchError
from kvmagent.storage.tickets import Source, Tickets

IMAGE = ImageRef(uuid="img1", format="raw", sha256="ab" * 32, size=4096)


@pytest.fixture
async def coordinator():
    async def tickets(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer host-token":
            return web.json_response({"error": {"code": "unauthorized", "message": "no", "field": None}}, status=401)
        image = request.match_info["image"]
        if image == "gone":
            return web.json_response({"error": {"code": "not_found", "message": "image gone does not exist",
                                                 "field": None}}, status=404)
        return web.json_response({"url": f"http://198.18.0.9:8744/v1/images/{image}/data", "ticket": "hsr1.x.y",
                                  "expires_at": 1, "size": 4096 if image == "img1" else 1, "sha256": "ab" * 32,
                                  "format": "raw"}, status=201)

    app = web.Application()
    app.router.add_post("/v1/images/{image}/tickets", tickets)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


async def test_a_ticket_gives_the_data_url_and_the_bearer_credential(coordinator):
    async with aiohttp.ClientSession() as s:
        src = await Tickets(str(coordinator.make_url("/")), lambda: "host-token").locate(s, IMAGE)
        assert src == Source("http://198.18.0.9:8744/v1/images/img1/data", {"Authorization": "Bearer hsr1.x.y"})
        with pytest.raises(ImageFetchError, match="HTTP 404 not_found image gone does not exist"):
            await Tickets(str(coordinator.make_url("/")), lambda: "host-token").locate(s, IMAGE.model_copy(
                update={"uuid": "gone"}))
        with pytest.raises(ImageFetchError, match="now describes it as 1 bytes"):
            await Tickets(str(coordinator.make_url("/")), lambda: "host-token").locate(s, IMAGE.model_copy(
                update={"uuid": "other"}))
        with pytest.raises(ImageFetchError, match="HTTP 401 unauthorized"):
            await Tickets(str(coordinator.make_url("/")), lambda: "wrong").locate(s, IMAGE)
