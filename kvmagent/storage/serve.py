"""The source side of a volume migration: this host's copy of a volume, read by the migration's target.

`GET /v1/migration/volumes/{uuid}/manifest` answers the volume's record and each file's size and sha256;
`GET .../files/{file}` the bytes of one file of its record (Range requests served, so a target that
restarts resumes where its partial file ends; sent with sendfile). Both want `Authorization: Bearer
<ticket>`: a ticket the coordinator issued to the target for that volume, keyed with this host's token
(`agentkit.volumetickets`), checked here without asking anyone. The checksums are computed once per
file version (size and mtime), off the event loop, however many manifests ask meanwhile (a target whose read
of a large file's manifest timed out asks again while the first hashing still runs); only the last version's
of each file still there is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from agentkit.errors import HostStackError, NotFound, Unauthorized
from agentkit.volumetickets import check
from kvmagent.storage.layout import Layout
from kvmagent.storage.record import VolumeRecord, load

log = logging.getLogger(__name__)
IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _failed(done: asyncio.Future[str]) -> bool:
    return done.done() and (done.cancelled() or done.exception() is not None)


class VolumeServer:
    PREFIX = "/v1/migration/volumes/"

    def __init__(self, key: Callable[[], bytes]):
        self.key = key
        self.layouts: Callable[[], list[Layout]] = list  # the usable storages (set by the composition root)
        # file -> (size, mtime, its sha256 being or done computed) of its version last read
        self._sums: dict[Path, tuple[int, int, asyncio.Future[str]]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.get(self.PREFIX + "{uuid}/manifest", self.manifest),
                web.get(self.PREFIX + "{uuid}/files/{file}", self.file)]

    def _find(self, request: web.Request) -> tuple[Layout, VolumeRecord]:
        uuid = request.match_info["uuid"]
        scheme, _, ticket = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not ticket:
            raise Unauthorized("a volume ticket is required (Authorization: Bearer ...)")
        check(self.key(), uuid, ticket.strip(), time.time())
        if IDENT.match(uuid):
            for layout in self.layouts():
                record = load(layout.record(uuid))
                if record is not None:
                    return layout, record
        raise NotFound(what="volume", ident=uuid)

    async def _sha256(self, path: Path) -> tuple[int, str]:
        """One hashing per file version, shared by every manifest that asks while it runs: each ask of a target
        that timed out and asked again read the whole file beside the others, holding the loop's default threads
        (its name lookups too) for as long as they ran. A hashing that failed is not kept."""
        st = path.stat()
        kept = self._sums.get(path)
        if kept is None or kept[:2] != (st.st_size, st.st_mtime_ns) or _failed(kept[2]):
            kept = self._sums[path] = (st.st_size, st.st_mtime_ns,
                                       asyncio.ensure_future(asyncio.to_thread(sha256_of, path)))
        return st.st_size, await asyncio.shield(kept[2])

    async def manifest(self, request: web.Request) -> web.Response:
        for gone in [p for p in self._sums if not p.exists()]:  # volumes deleted or moved away since
            del self._sums[gone]
        try:
            layout, record = self._find(request)
            files = {}
            for file_id in sorted(record.files):
                try:
                    size, sha = await self._sha256(layout.volume_file(record.uuid, file_id))
                except FileNotFoundError:  # the volume deleted (its directory renamed away) since its record was read
                    raise NotFound(what=f"file of volume {record.uuid}", ident=file_id) from None
                files[file_id] = {"size": size, "sha256": sha}
        except HostStackError as e:
            log.info("volume manifest refused: %s", e)
            return web.json_response(e.body(), status=e.status)
        return web.json_response({"record": record.model_dump(), "files": files})

    async def file(self, request: web.Request) -> web.StreamResponse:
        try:
            layout, record = self._find(request)
            file_id = request.match_info["file"]
            if file_id not in record.files:
                raise NotFound(what=f"file of volume {record.uuid}", ident=file_id)
        except HostStackError as e:
            log.info("volume file refused: %s", e)
            return web.json_response(e.body(), status=e.status)
        return web.FileResponse(layout.volume_file(record.uuid, file_id), chunk_size=CHUNK)
