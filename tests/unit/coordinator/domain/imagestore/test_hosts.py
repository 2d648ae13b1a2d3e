"""Image store hosts' liveness (coordinator/domain/imagestore/hosts.py) against stand-in stores on loopback
addresses (127.0.0.x, one port for all, as the coordinator expects): an answer is a heartbeat; what a
store answers, and a token the coordinator cannot read, never end the elected replica."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from cryptography.fernet import Fernet

from agentkit.tls import TlsSettings
from coordinator.domain import credentials
from coordinator.domain.hosts import Host
from coordinator.domain.imagestore import storage
from coordinator.domain.imagestore.hosts import ImageStoreLiveness
from coordinator.domain.imagestore.storage import ImageStoreRecord
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Txn
from coordinator.settings import CoordinatorSettings

KEY, OTHER_KEY = Fernet.generate_key().decode(), Fernet.generate_key().decode()
HEALTH = {"status": "ok", "version": "9.9", "root": "/srv/images",
          "capacity": {"total": 10, "available": 5, "used": 1, "images": 0, "downloading": 0}}
Answer = tuple[int, object]  # what /health answers: status, JSON body
StandIn = Callable[[str, Answer], Awaitable[int]]


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    """stand_in(address, (status, body)): a stand-in image store answering /health so; its port (the first
    one started picks it, the others take the same)."""
    runners: list[web.AppRunner] = []

    async def start(address: str, answer: Answer) -> int:
        async def health(_: web.Request) -> web.Response:
            return web.json_response(answer[1], status=answer[0])

        app = web.Application()
        app.router.add_get("/health", health)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, address, int(runners[0].addresses[0][1]) if runners else 0).start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for r in runners:
        await r.cleanup()


def settings(port: int, secret_key: str | None = KEY) -> CoordinatorSettings:
    return CoordinatorSettings(admin_token="a" * 16, imagestore_port=port, secret_key=secret_key,
                               tls=TlsSettings(plain_http=True))  # the stand-ins speak plain HTTP


def store_host(n: int, key: str = KEY) -> Host:
    return Host(uuid=f"u{n}", name=f"store{n}", address=f"127.0.0.{n}", kind="imagestore", token_sha256="",
                created=0.0, agent_secret=credentials.encrypt(key, "t" * 24))


class Records:
    """The Store calls a liveness check makes: the host records, and the heartbeats it commits."""

    def __init__(self, *hosts: Host) -> None:
        self.entries = [Entry(keys.host(h.uuid), h.record(), 1, 1) for h in hosts]
        self.beats: list[str] = []

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        return self.entries, 1

    async def commit(self, txn: Txn) -> int:
        self.beats += [op.request_put.key.decode() for op in txn.ops if op.request_put.key.decode().startswith(
            keys.alive(""))]
        return 2


async def test_only_stores_that_answer_as_stores_beat_and_nothing_they_answer_ends_the_check(stand_in, caplog):
    port = await stand_in("127.0.0.1", (200, HEALTH))
    await stand_in("127.0.0.2", (200, {"status": "ok"}))  # no version: not a store's answer
    await stand_in("127.0.0.3", (500, ["not", "an", "error", "envelope"]))
    await stand_in("127.0.0.4", (200, HEALTH))  # its token was sealed with a key since rotated away
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
    port = await stand_in("127.0.0.1", (200, HEALTH))
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
    port = await stand_in("127.0.0.2", (200, {"status": "ok"}))
    host = store_host(2)
    rec = ImageStoreRecord(uuid="s", name="bs", host_uuid=host.uuid, path="/srv/images", created_at=0)
    view = storage.describe(rec, host, await storage.health(settings(port), host))
    assert view.status == "Disconnected" and view.reason is not None
    assert "GET /health: a malformed answer (version: Field required)" in view.reason
