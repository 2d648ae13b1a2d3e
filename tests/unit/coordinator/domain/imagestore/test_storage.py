"""Adding an image store (coordinator/domain/imagestore/storage.py) on an in-memory store, its host's agent a
stand-in on loopback: one image store per host, and none on a deleted host; its delete, refused while it holds
images; races with other replicas included."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from agentkit.errors import InUse, NotFound
from coordinator.domain.errors import Exists
from coordinator.domain.imagestore import images, storage
from coordinator.domain.imagestore.storage import ImageStoreRecord
from coordinator.etcd import keys
from coordinator.etcd.store import Txn
from imagestore.wire import AddRequest

from ..memstore import MemoryStore
from .standin import settings, store_host

HEALTH = {"status": "ok", "version": "9.9", "root": "/srv/images",
          "capacity": {"total": 10, "available": 5, "used": 1, "images": 0, "downloading": 0}}


async def stand_in_store(stand_in: Callable[[str, web.Application], Awaitable[int]]) -> tuple[MemoryStore, int]:
    """The store with the image store host store1, whose agent answers its health."""
    async def health(_: web.Request) -> web.Response:
        return web.json_response(HEALTH)

    app = web.Application()
    app.router.add_get("/health", health)
    port = await stand_in("127.0.0.1", app)
    store = MemoryStore()
    await store.put(keys.host("u1"), store_host(1).record())
    return store, port


async def test_an_image_store_added_on_its_host_by_another_replica_meanwhile_refuses_the_second(stand_in):
    store, port = await stand_in_store(stand_in)
    theirs = ImageStoreRecord(uuid="s1", name="theirs", host_uuid="u1", path="/srv/images", created_at=1.0)
    store.meanwhile.append(Txn().put(keys.image_store("s1"), theirs.model_dump()))
    with pytest.raises(Exists, match="^host store1 already holds an image store$") as e:  # after it read none
        await storage.add(store, settings(port), "ours", "store1", None, "default")
    assert e.value.field == "host"
    assert [r.name for r in await storage.load_stores(store)] == ["theirs"]


async def test_an_image_store_added_on_a_host_deleted_meanwhile_is_refused_and_not_recorded(stand_in):
    store, port = await stand_in_store(stand_in)
    store.meanwhile.append(Txn().delete(keys.host("u1")))
    with pytest.raises(NotFound, match="^host store1 does not exist$"):  # after it found the host
        await storage.add(store, settings(port), "ours", "store1", None, "default")
    assert await storage.load_stores(store) == []
    assert await store.get(keys.image_store_name("ours")) is None


async def test_an_image_added_to_an_image_store_while_it_is_deleted_keeps_the_store():
    store = MemoryStore()
    bs = ImageStoreRecord(uuid="s1", name="bs", host_uuid="u1", path="/srv/images", created_at=1.0)
    await store.put(keys.image_store(bs.uuid), bs.model_dump())
    image = images.new_record(settings(1), bs, "late", AddRequest(url="http://198.18.0.9/a.qcow2"))
    store.meanwhile.append(Txn().put(keys.image(image.uuid), image.model_dump()))  # on another replica
    with pytest.raises(InUse, match="^image store bs still holds 1 images: late; delete them first$"):
        await storage.delete(store, bs.uuid)  # after it read none
    assert [r.uuid for r in await storage.load_stores(store)] == [bs.uuid]
