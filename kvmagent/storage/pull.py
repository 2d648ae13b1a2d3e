"""The target side of a volume migration: copy a volume's files from the source host, verified.

A volume streamed here with `migrate_from` is pulled in the background (one task per volume): a ticket
from the coordinator, the source's manifest (the record, each file's size and sha256), then each file
into a partial file beside where it goes, resumed with Range requests and checked by size and sha256
(`fetch.py`, as images are). Only when every file is verified are they renamed into place, the backing
chain opened with qemu-img, and the record saved last: a volume directory with a record is complete.
A killed agent (here or at the source) resumes from what the partial files hold; a failed copy is tried
again `retry` seconds later. Progress and the verified checksums are reported as `migration` events.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any

import aiohttp
from pydantic import ValidationError

from agentkit.durable import fsync_dir, write_atomic
from agentkit.model import StoredVolumeSpec
from agentkit.proc import ProcessError
from agentkit.supervise import Supervisor
from kvmagent.errors import ImageFetchError, StorageError
from kvmagent.storage import qemuimg
from kvmagent.storage.fetch import fetch
from kvmagent.storage.layout import Layout
from kvmagent.storage.record import FILE_ID, VolumeRecord, load, save
from kvmagent.storage.tickets import Source

log = logging.getLogger(__name__)
# A ticket for a volume's files from the coordinator: where the source serves them, and the migration's id.
VolumeTicket = Callable[[aiohttp.ClientSession, str], Awaitable[tuple[Source, str]]]
DONE = "migrated.json"  # beside the record: the migration that made it, and each file's sha256
REPORT_EVERY = 1.0  # seconds between progress reports of a copy


@dataclass(frozen=True)
class VolumeFile:
    """One file of the volume as the source's manifest describes it."""

    uuid: str  # its file id (`fetch` names what it fetches by `uuid`)
    sha256: str
    size: int


@dataclass
class Copy:
    """Where one volume's copy stands."""

    id: str
    state: str = "Waiting"
    done: int = 0
    total: int = 0
    error: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    failed_at: float = 0.0

    def body(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "done": self.done, "total": self.total,
                "error": self.error[:1024] if self.error else None, "files": self.files}


class Puller:
    def __init__(self, ticket: VolumeTicket, tasks: Supervisor, report: Callable[[str, dict[str, Any]], object],
                 on_change: Callable[[], None], stall: float, retries: int, retry: float,
                 ssl: SSLContext | None = None):
        self.ticket, self._tasks, self._report, self._on_change = ticket, tasks, report, on_change
        self._ssl = ssl  # verifies the coordinator and the source host's agent (None: the system's CAs)
        self.stall, self.retries, self.retry = stall, retries, retry
        self.copies: dict[str, Copy] = {}
        self._running: set[str] = set()
        self._session: aiohttp.ClientSession | None = None

    def want(self, spec: StoredVolumeSpec, layout: Layout) -> dict[str, Any]:
        """The copy's report: Verified once the volume is here, else what it waits for (a pull is started
        or resumed when none runs)."""
        if spec.migrate_from is None:
            raise ValueError(f"volume {spec.uuid} is not migrating here")
        mid = spec.migrate_from.id
        done = _verified(layout, spec.uuid, mid)
        if done is not None:
            self.copies.pop(spec.uuid, None)
            return Copy(mid, "Verified", files=done, done=0, total=0).body()
        copy = self.copies.get(spec.uuid)
        if copy is None or copy.id != mid:
            copy = self.copies[spec.uuid] = Copy(mid)
        if spec.uuid not in self._running and time.monotonic() - copy.failed_at >= self.retry:
            self._running.add(spec.uuid)
            self._tasks.start(self._pull(spec, layout, copy), name=f"pull volume {spec.uuid}")
        return copy.body()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _pull(self, spec: StoredVolumeSpec, layout: Layout, copy: Copy) -> None:
        try:
            await self._copy(spec, layout, copy)
            log.info("volume %s: copy verified (migration %s)", spec.uuid, copy.id)
        except (StorageError, ProcessError, aiohttp.ClientError, TimeoutError, ValidationError,
                OSError) as e:  # OSError: this storage's filesystem (full, read-only, I/O)
            copy.state, copy.error, copy.failed_at = "Error", f"{type(e).__name__}: {e}", time.monotonic()
            log.error("volume %s: copy failed (tried again in %gs): %s", spec.uuid, self.retry, copy.error)
            self._report(spec.uuid, copy.body())
            asyncio.get_running_loop().call_later(self.retry, self._on_change)
        finally:
            self._running.discard(spec.uuid)
            self._on_change()

    async def _copy(self, spec: StoredVolumeSpec, layout: Layout, copy: Copy) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl or True))
        session = self._session
        source, mid = await self.ticket(session, spec.uuid)
        if mid != copy.id:
            raise StorageError(f"volume {spec.uuid}: the coordinator now migrates it as {mid}, not {copy.id}")
        record, files = await self._manifest(session, source, spec)
        folder = layout.volume_dir(spec.uuid)
        folder.mkdir(parents=True, exist_ok=True)
        copy.state, copy.error, copy.total = "Copying", None, sum(f.size for f in files)
        base = {f.uuid: 0 for f in files}
        last = 0.0

        def progress(file_id: str, n: int) -> None:
            nonlocal last
            base[file_id] = n
            copy.done = sum(base.values())
            if time.monotonic() - last >= REPORT_EVERY:
                last = time.monotonic()
                self._report(spec.uuid, copy.body())

        async def locate(s: aiohttp.ClientSession, f: VolumeFile) -> Source:
            """A fresh ticket per file and per resume: tickets are short-lived, a copy may not be."""
            fresh, _mid = await self.ticket(s, spec.uuid)
            return Source(f"{fresh.url}/files/{f.uuid}", fresh.headers)
        for f in files:
            await fetch(session, f, folder / f".{f.uuid}.part", locate, stall=self.stall, retries=self.retries,
                        progress=functools.partial(progress, f.uuid))
        for f in files:
            os.replace(folder / f".{f.uuid}.part", layout.volume_file(spec.uuid, f.uuid))
        fsync_dir(folder)
        await qemuimg.info(layout.volume_file(spec.uuid, record.active), "qcow2")  # the chain opens
        copy.files = {f.uuid: f.sha256 for f in files}
        write_atomic(folder / DONE, json.dumps({"id": copy.id, "files": copy.files}).encode())
        save(layout.record(spec.uuid), record)
        copy.state, copy.done = "Verified", copy.total

    async def _manifest(self, session: aiohttp.ClientSession, source: Source, spec: StoredVolumeSpec
                        ) -> tuple[VolumeRecord, list[VolumeFile]]:
        """The source's record of the volume (it must be this volume, over this image) and its files."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.stall, sock_read=self.stall)
        async with session.get(f"{source.url}/manifest", headers=source.headers, timeout=timeout) as r:
            if r.status != 200:
                raise ImageFetchError(f"volume {spec.uuid}: the source answers HTTP {r.status} "
                                      f"{(await r.text())[:200]}")
            doc = await r.json()
        try:
            record = VolumeRecord.model_validate(doc["record"])
            files = [VolumeFile(i, str(doc["files"][i]["sha256"]), int(doc["files"][i]["size"])) for i in
                     sorted(record.files)]
        except (KeyError, TypeError, ValueError) as e:
            raise StorageError(f"volume {spec.uuid}: the source's manifest is not one: {e}") from e
        image = spec.image.uuid if spec.image else None
        if (record.uuid, record.storage_uuid, record.image_uuid) != (spec.uuid, spec.storage_uuid, image):
            raise StorageError(f"volume {spec.uuid}: the source's record describes volume {record.uuid} of storage "
                               f"{record.storage_uuid} over image {record.image_uuid}")
        bad = [f.uuid for f in files if not FILE_ID.match(f.uuid)] + [p for p in record.files.values()
                                                                      if p is not None and p not in record.files]
        if bad or record.active not in record.files:
            raise StorageError(f"volume {spec.uuid}: the source's record names files that are not its own: {bad}")
        return record, files


def _verified(layout: Layout, volume_uuid: str, migration_id: str) -> dict[str, str] | None:
    """The files' checksums once migration `migration_id` put the volume here (None: not yet)."""
    if load(layout.record(volume_uuid)) is None:
        return None
    try:
        done = json.loads((layout.volume_dir(volume_uuid) / DONE).read_bytes())
    except (OSError, ValueError):
        return None
    files = done.get("files") if isinstance(done, dict) and done.get("id") == migration_id else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else None


