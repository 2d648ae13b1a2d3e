"""The source side of a volume migration over loopback: the manifest (record, sizes, sha256) and the files
with Range, for a valid ticket only."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agentkit.volumetickets import issue
from kvmagent.storage import serve
from kvmagent.storage.layout import Layout
from kvmagent.storage.record import VolumeRecord, save
from kvmagent.storage.serve import VolumeServer

KEY = hashlib.sha256(b"host-token").digest()
F0, F1 = b"base" * 50000, b"top" * 1000


@pytest.fixture
async def client(tmp_path: Path):
    layout = Layout(tmp_path)
    folder = layout.volume_dir("vol1")
    folder.mkdir(parents=True)
    (folder / "f0.qcow2").write_bytes(F0)
    (folder / "f1.qcow2").write_bytes(F1)
    save(layout.record("vol1"), VolumeRecord(uuid="vol1", storage_uuid="ps1", files={"f0": None, "f1": "f0"},
                                             active="f1", snapshots={"s1": "f0"}, size_bytes=1 << 20, next_file=2))
    server = VolumeServer(lambda: KEY)
    server.layouts = lambda: [layout]
    app = web.Application()
    app.add_routes(server.routes())
    async with TestClient(TestServer(app)) as c:
        yield c


def auth(volume: str = "vol1", expires: float | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(KEY, volume, int(expires or time.time() + 60))}"}


async def test_the_manifest_names_every_file_of_the_chain_with_its_checksum(client):
    r = await client.get("/v1/migration/volumes/vol1/manifest", headers=auth())
    doc = await r.json()
    assert r.status == 200 and doc["record"]["active"] == "f1" and doc["record"]["snapshots"] == {"s1": "f0"}
    assert doc["files"] == {"f0": {"size": len(F0), "sha256": hashlib.sha256(F0).hexdigest()},
                            "f1": {"size": len(F1), "sha256": hashlib.sha256(F1).hexdigest()}}


async def test_a_file_is_served_from_where_a_resumed_copy_stands(client):
    r = await client.get("/v1/migration/volumes/vol1/files/f0", headers={**auth(), "Range": "bytes=1000-"})
    assert r.status == 206 and await r.read() == F0[1000:]


@pytest.mark.parametrize(("path", "ticket", "status"), [
    ("/v1/migration/volumes/vol1/manifest", None, 401),
    ("/v1/migration/volumes/vol1/manifest", ("vol2", 60), 403),
    ("/v1/migration/volumes/vol1/manifest", ("vol1", -360), 403),  # expired, past the clocks' skew
    ("/v1/migration/volumes/vol2/manifest", ("vol2", 60), 404),
    ("/v1/migration/volumes/vol1/files/volume.json", ("vol1", 60), 404),  # only the record's files
    ("/v1/migration/volumes/vol1/files/f9", ("vol1", 60), 404),
])
async def test_without_the_right_ticket_or_file_nothing_is_read(client, path, ticket, status):
    headers = auth(ticket[0], time.time() + ticket[1]) if ticket else {}
    r = await client.get(path, headers=headers)
    assert r.status == status and (await r.json())["error"]["code"]


async def test_checksums_are_kept_only_for_the_files_there_are_now(tmp_path: Path):
    """A host serves volumes that are then deleted (moved away), whose files change between copies: the checksums
    kept stay one per file there is, not one per file version ever served."""
    layout = Layout(tmp_path)
    server = VolumeServer(lambda: KEY)
    server.layouts = lambda: [layout]
    app = web.Application()
    app.add_routes(server.routes())
    async with TestClient(TestServer(app)) as c:
        for i in range(200):
            folder = layout.volume_dir(f"vol{i}")
            folder.mkdir(parents=True)
            save(layout.record(f"vol{i}"), VolumeRecord(uuid=f"vol{i}", storage_uuid="ps1", files={"f0": None},
                                                        active="f0", size_bytes=1 << 20, next_file=1))
            for version in (F0, F1):  # the guest wrote between two copies
                (folder / "f0.qcow2").write_bytes(version)
                r = await c.get(f"/v1/migration/volumes/vol{i}/manifest", headers=auth(f"vol{i}"))
                assert (await r.json())["files"]["f0"]["sha256"] == hashlib.sha256(version).hexdigest()
            for f in folder.iterdir():  # moved away: deleted here
                f.unlink()
    assert len(server._sums) <= 1


async def test_a_file_is_hashed_once_however_many_manifests_wait_for_it(client, monkeypatch):
    """A target whose manifest read times out on a large volume asks again while the source still hashes: the asks
    wait for the one hashing of each file, not one full read of the volume each (on the loop's default threads)."""
    release = threading.Event()
    hashed: list[str] = []
    sha256_of = serve.sha256_of

    def slow(path: Path) -> str:
        hashed.append(path.name)
        release.wait(10)
        return sha256_of(path)

    monkeypatch.setattr(serve, "sha256_of", slow)
    asks = [asyncio.ensure_future(client.get("/v1/migration/volumes/vol1/manifest", headers=auth()))
            for _ in range(4)]
    while not hashed:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # every ask is in by now
    release.set()
    for r in await asyncio.gather(*asks):
        assert (await r.json())["files"]["f1"]["sha256"] == hashlib.sha256(F1).hexdigest()
    assert sorted(hashed) == ["f0.qcow2", "f1.qcow2"]


async def test_a_file_gone_since_the_record_was_read_is_not_found(client, tmp_path):
    """The volume deleted (its directory renamed into the trash) while a manifest is made, or a file removed by
    hand: the target reads a 404 naming the file, not a 500 and a traceback in the source's log."""
    (Layout(tmp_path).volume_file("vol1", "f1")).unlink()
    r = await client.get("/v1/migration/volumes/vol1/manifest", headers=auth())
    assert r.status == 404 and (await r.json())["error"]["message"] == "file of volume vol1 f1 does not exist"
