"""Adding an image to an image store (coordinator/domain/imagestore/images.py) against a stand-in store on
loopback: a store that refused leaves no record; one that took the request without answering leaves the
image Failed, and deleting it removes it at the store too (nothing kept there that no one sees); an image store
deleted by another replica meanwhile is asked nothing and holds no image."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from aiohttp import web

from agentkit.errors import NotFound, error_body
from coordinator.domain.errors import MissingReference
from coordinator.domain.imagestore import images
from coordinator.domain.imagestore.agents import StoreFailed
from coordinator.domain.imagestore.storage import ImageStoreRecord
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn
from imagestore.wire import AddRequest, ImageInfo, Progress

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
    connection without an answer, "take" downloads it (`held`, until a DELETE), else (status, code) is the
    error it answers. `calls` records them; `after` (method: hook) runs as a request of that method ends."""

    def __init__(self, put: str | tuple[int, str]) -> None:
        self.put, self.calls = put, list[tuple[str, str]]()
        self.held, self.after = set[str](), dict[str, Callable[[str], None]]()

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.calls.append((request.method, image_id := request.match_info["id"]))
            try:
                return answer(request.method, image_id)
            finally:
                if hook := self.after.pop(request.method, None):
                    hook(image_id)

        def answer(method: str, image_id: str) -> web.StreamResponse:
            if method == "PUT" and self.put == "take" or method == "GET" and image_id in self.held:
                self.held.add(image_id)
                info = ImageInfo(id=image_id, state="downloading", url="http://198.18.0.9/a.iso", format="auto",
                                 media_type=None, progress=Progress(phase="queued"))
                return web.json_response(info.model_dump(mode="json"), status=202 if method == "PUT" else 200)
            if method == "DELETE":
                self.held.discard(image_id)
                return web.Response(status=204)
            status, code = self.put if method == "PUT" else (404, "image_not_found")
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


async def records_of(*recs: images.ImageRecord) -> MemoryStore:
    store = MemoryStore()
    await store.put(keys.image_store(BS.uuid), BS.model_dump())
    await store.put(keys.host("u1"), store_host(1).record())
    for rec in recs:
        await store.put(keys.image(rec.uuid), rec.model_dump())
    return store


async def test_a_refresh_that_asked_again_for_an_image_deleted_meanwhile_leaves_nothing_at_the_store(stand_in):
    """A refresh (a follower, any replica's read) finds a Downloading image gone at its store because a delete
    is under way elsewhere, asks for it again, and finds the record gone after that: it deletes what it asked
    for, or the store would download an image that no record names, for ever."""
    stub = Store1("take")
    port = await stand_in("127.0.0.1", stub.app())
    rec = images.new_record(settings(port), BS, "img1", REQUEST)
    store = await records_of(rec)
    stub.after["PUT"] = lambda _: store.kv.pop(keys.image(rec.uuid))  # the delete's record delete, meanwhile
    with pytest.raises(NotFound):
        await images.refresh(store, settings(port), rec.uuid)
    assert [m for m, _ in stub.calls] == ["GET", "PUT", "DELETE"] and stub.held == set()


async def test_a_delete_asks_the_store_again_once_the_record_is_gone(stand_in):
    """A refresh that read the record before the delete did and asked the store for the image again right
    after the store deleted it, then found the record still there: the delete's second request ends it."""
    stub = Store1("take")
    port = await stand_in("127.0.0.1", stub.app())
    rec = images.new_record(settings(port), BS, "img1", REQUEST)
    store, stub.held = await records_of(rec), {rec.uuid}
    stub.after["DELETE"] = stub.held.add  # that refresh's PUT lands just after the first DELETE
    await images.remove(store, settings(port), rec)
    assert [m for m, _ in stub.calls] == ["DELETE", "DELETE"] and stub.held == set()
    assert await store.count(keys.IMAGES) == 0
