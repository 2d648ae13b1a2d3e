"""The target side of a volume migration: a copy its storage's filesystem fails is retried, not a crash."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from agentkit.model import StoredVolumeSpec, VolumeMigration
from agentkit.supervise import Supervisor
from kvmagent.storage import pull
from kvmagent.storage.layout import Layout
from kvmagent.storage.pull import Puller
from kvmagent.storage.record import VolumeRecord
from kvmagent.storage.tickets import Source

RECORD = VolumeRecord(uuid="v1", storage_uuid="s1", files={"f0": None}, active="f0", size_bytes=1 << 20)


async def manifest(request: web.Request) -> web.Response:
    """The source host's agent: volume v1 has one file."""
    return web.json_response({"record": RECORD.model_dump(), "files": {"f0": {"sha256": "0" * 64, "size": 1}}})


async def test_a_copy_the_filesystem_fails_is_reported_and_retried_not_a_crash(tmp_path, monkeypatch):
    """A file of the volume cannot be written here (a full filesystem; NFS tells at the fsync): the migration
    reports the error and is tried again later, where the error ended the whole agent, again at every start."""
    async def no_space(*args: object, **kw: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    app = web.Application()
    app.router.add_get("/v1/migration/volumes/v1/manifest", manifest)
    reports: list[dict[str, Any]] = []
    tasks = Supervisor(on_crash=lambda: None)
    monkeypatch.setattr(pull, "fetch", no_space)
    async with TestServer(app, host="127.0.0.1") as source:
        async def ticket(session: aiohttp.ClientSession, volume: str) -> tuple[Source, str]:
            return Source(str(source.make_url("/v1/migration/volumes/v1")), {}), "m1"

        puller = Puller(ticket, tasks, lambda uuid, body: reports.append(body), lambda: None, 5, 1, 60)
        puller.want(StoredVolumeSpec(uuid="v1", storage_uuid="s1", size_bytes=1 << 20,
                                     migrate_from=VolumeMigration(id="m1", source_host="h2")), Layout(tmp_path))
        for _ in range(100):
            if reports or tasks.crashed:
                break
            await asyncio.sleep(0.02)
        await puller.close()
    assert tasks.crashed is None
    assert reports[-1]["state"] == "Error" and "No space left" in reports[-1]["error"]
