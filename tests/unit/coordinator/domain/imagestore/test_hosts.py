"""Image store hosts' liveness (coordinator/domain/imagestore/hosts.py) against stand-in stores on loopback:
an answer is a heartbeat; what a store answers, and a token the coordinator cannot read, never end the
elected replica."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from coordinator.domain.hosts import Host
from coordinator.domain.imagestore import storage
from coordinator.domain.imagestore.hosts import ImageStoreLiveness
from coordinator.domain.imagestore.storage import ImageStoreRecord
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Txn

from .standin import OTHER_KEY, settings, store_host

HEALTH = {"status": "ok", "version": "9.9", "root": "/srv/images",
          "capacity": {"total": 10, "available": 5, "used": 1, "images": 0, "downloading": 0}}


def answering(status: int, body: object) -> web.Application:
    """A stand-in store whose /health answers `body` with `status`."""
    async def health(_: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/health", health)
    return app


class Records:
    """The Store calls a liveness check makes: the host records, and the heartbeats it commits."""

    def __init__(self, *hosts: Host) -> None:
        self.entries = [Entry(keys.host(h.uuid), h.record(), 1, 1) for h in hosts]
        self.beats: list[str] = []
        self.hosts: list[dict] = []  # the host records written

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        return self.entries, 1

    async def commit(self, txn: Txn) -> int:
        puts = [op.request_put for op in txn.ops if op.request_put.key]
        self.beats += [p.key.decode() for p in puts if p.key.decode().startswith(keys.alive(""))]
        self.hosts += [json.loads(p.value) for p in puts if p.key.decode().startswith(keys.HOSTS)]
        return 2


async def test_only_stores_that_answer_as_stores_beat_and_nothing_they_answer_ends_the_check(stand_in, caplog):
    port = await stand_in("127.0.0.1", answering(200, HEALTH))
    await stand_in("127.0.0.2", answering(200, {"status": "ok"}))  # no version: not a store's answer
    await stand_in("127.0.0.3", answering(500, ["not", "an", "error", "envelope"]))
    await stand_in("127.0.0.4", answering(200, HEALTH))  # its token was sealed with a key since rotated away
    records = Records(store_host(1), store_host(2), store_host(3), store_host(4, key=OTHER_KEY))
    liveness = ImageStoreLiveness(records, settings(port))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "coordinator.domain.imagestore.hosts"):
        for _ in range(3):
            await liveness.check()
    assert records.beats == [keys.alive("u1")] * 3
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("image store host store4 is not asked for its health: image "
                                                     "store host store4: its token cannot be read")


async def test_without_secret_key_no_store_is_asked_and_each_is_named_once(stand_in, caplog):
    port = await stand_in("127.0.0.1", answering(200, HEALTH))
    records = Records(store_host(1), store_host(2))
    liveness = ImageStoreLiveness(records, settings(port, secret_key=None))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "coordinator.domain.imagestore.hosts"):
        await liveness.check()
        await liveness.check()
    assert records.beats == []
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split(" is not asked")[0] for w in warned] == ["image store host store1", "image store host store2"]
    assert "secret_key" in warned[0]


async def test_a_store_that_answers_not_as_a_store_shows_disconnected_saying_so(stand_in):
    port = await stand_in("127.0.0.2", answering(200, {"status": "ok"}))
    host = store_host(2)
    rec = ImageStoreRecord(uuid="s", name="bs", host_uuid=host.uuid, path="/srv/images", created_at=0)
    view = storage.describe(rec, host, await storage.health(settings(port), host))
    assert view.status == "Disconnected" and view.reason is not None
    assert "GET /health: a malformed answer (version: Field required)" in view.reason


async def test_the_session_a_store_answers_with_is_recorded_for_its_host(stand_in):
    """A deploy's wait compares it: a store restarted answers with a new one."""
    port = await stand_in("127.0.0.1", answering(200, HEALTH | {"session": "s" * 32}))
    await stand_in("127.0.0.2", answering(200, HEALTH | {"session": "not one"}))  # not a store's answer
    records = Records(store_host(1), store_host(2))
    await ImageStoreLiveness(records, settings(port)).check()  # type: ignore[arg-type]
    assert records.beats == [keys.alive("u1")]
    assert [(h["uuid"], h["agent_version"], h["agent_session"]) for h in records.hosts] == [("u1", "9.9", "s" * 32)]
