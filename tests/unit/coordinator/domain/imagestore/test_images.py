"""Adding an image to an image store (coordinator/domain/imagestore/images.py) against a stand-in store on
loopback: a store that refused leaves no record; one that took the request without answering leaves the
image Failed, and deleting it removes it at the store too (nothing kept there that no one sees); an image store
deleted by another replica meanwhile is asked nothing and holds no image."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from agentkit.errors import error_body
from coordinator.domain.errors import MissingReference
from coordinator.domain.imagestore import images
from coordinator.domain.imagestore.agents import StoreFailed
from coordinator.domain.imagestore.storage import ImageStoreRecord
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn
from imagestore.wire import AddRequest

from ..memstore import MemoryStore
from .standin import settings, store_host

BS = ImageStoreRecord(uuid="bs1", name="bs", host_uuid="u1", path="/srv/images", created_at=0)
REQUEST = AddRequest(url="http://198.18.0.9/a.iso?token=secret")


class Records(Store):
    """The Store calls of adding and deleting an image, on a dict (nothing else writes: compares hold)."""

    def __init__(self) -> None:
        self.kv: dict[str, object] = {keys.image_store(BS.uuid): BS.model_dump(),
                                      keys.host("u1"): store_host(1).record()}

    async def get(self, key: str) -> Entry | None:
        return Entry(key, self.kv[key], 1, 1) if key in self.kv else None

    async def commit(self, txn: Txn) -> int:
        for op in txn.ops:
            if op.WhichOneof("request") == "request_put":
                self.kv[op.request_put.key.decode()] = json.loads(op.request_put.value)
            else:
                self.kv.pop(op.request_delete_range.key.decode(), None)
        return 2

    def images(self) -> list[dict]:
        return [v for k, v in self.kv.items() if k.startswith(keys.IMAGES) and isinstance(v, dict)]


class Store1:
    """A stand-in store that has no image yet and does `put` with every PUT: "hang up" closes the
    connection without an answer, else (status, code) is the error it answers. `calls` records them."""

    def __init__(self, put: str | tuple[int, str]) -> None:
        self.put, self.calls = put, list[tuple[str, str]]()

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.calls.append((request.method, request.match_info["id"]))
            if request.method == "PUT" and self.put == "hang up":
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            if request.method == "DELETE":
                return web.Response(status=204)
            status, code = self.put if request.method == "PUT" else (404, "image_not_found")
            return web.json_response(error_body(code, f"{code} here"), status=status)  # type: ignore[arg-type]

        app = web.Application()
        app.router.add_route("*", "/v1/images/{id}", handle)
        return app


async def test_an_add_the_store_may_have_taken_unanswered_stays_failed_until_deleted_there_too(stand_in):
    stub, records = Store1("hang up"), Records()
    port = await stand_in("127.0.0.1", stub.app())
    with pytest.raises(StoreFailed) as e:
        await images.start(records, settings(port), BS, "img1", REQUEST)
    [rec] = records.images()
    assert (e.value.status, e.value.code) == (502, "store_unreachable")
    assert f"image img1 ({rec['uuid']}) is kept as Failed: delete it" in e.value.message
    assert rec["status"] == "Failed" and rec["reason"].startswith("store_unreachable: image store store1: ")
    assert ("PUT", rec["uuid"]) in stub.calls  # the store has it (aiohttp sends an idempotent PUT twice)
    await images.remove(records, settings(port), images.ImageRecord.model_validate(rec))
    assert stub.calls[-1] == ("DELETE", rec["uuid"]) and records.images() == []


async def test_an_add_the_store_refused_leaves_nothing(stand_in):
    stub, records = Store1((400, "url_refused")), Records()
    port = await stand_in("127.0.0.1", stub.app())
    with pytest.raises(StoreFailed) as e:
        await images.start(records, settings(port), BS, "img1", REQUEST)
    assert (e.value.status, e.value.code, e.value.message) == (400, "url_refused", "url_refused here")
    assert records.images() == [] and [m for m, _ in stub.calls] == ["GET", "PUT"]


async def test_an_add_to_an_image_store_deleted_meanwhile_is_refused_and_asks_it_nothing(stand_in):
    stub, store = Store1((400, "url_refused")), MemoryStore()
    port = await stand_in("127.0.0.1", stub.app())
    await store.put(keys.image_store(BS.uuid), BS.model_dump())
    await store.put(keys.host("u1"), store_host(1).record())
    store.meanwhile.append(Txn().delete(keys.image_store(BS.uuid)))  # on another replica, after the add read it
    with pytest.raises(MissingReference, match="^backup storage bs1 does not exist$") as e:
        await images.start(store, settings(port), BS, "img1", REQUEST)
    assert (e.value.status, e.value.field) == (400, "backup_storage_uuid")
    assert await store.count(keys.IMAGES) == 0 and stub.calls == []
