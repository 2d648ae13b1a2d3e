"""Images made from volumes: a flat qcow2 copy of a snapshot (or of a stopped VM's volume) in `exports/`,
with its size and sha256, sent to the image store (`upload`: an upload ticket from the coordinator, the
store checking the bytes against the sha256) once, then kept until the coordinator drops the export.

`qemu-img convert` reads the whole backing chain (the cached image included) and writes one standalone
qcow2 (`-W`: out of order, faster; still only the allocated data). A snapshot's files never change, so
it can be copied while its VM runs; the volume's current data only while no VM holds it. The copy is
made under a temporary name and renamed once its checksum is written beside it (`<image>.json`), so
an export that exists is complete. An export the volume's spec no longer asks for is removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from agentkit.durable import write_atomic
from agentkit.model import ExportSpec, StoredVolumeSpec
from kvmagent.errors import StorageError, VolumeBusy
from kvmagent.storage import qemuimg
from kvmagent.storage.holders import Holders
from kvmagent.storage.layout import Layout
from kvmagent.storage.record import VolumeRecord
from kvmagent.storage.tickets import Source

log = logging.getLogger(__name__)
UploadTarget = Callable[[aiohttp.ClientSession, str], Awaitable[Source]]
UPLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class Exports:
    def __init__(self, layout: Layout, holders: Holders):
        self.layout = layout
        self.holders = holders

    def sidecar(self, image_uuid: str) -> Path:
        return self.layout.export_file(image_uuid).with_suffix(".json")

    def done(self, image_uuid: str) -> dict[str, Any] | None:
        """The made export's report; None when it is not made, or its record cannot be read (it is made again)."""
        path = self.sidecar(image_uuid)
        try:
            found = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as e:
            found = str(e)
        if not isinstance(found, dict):
            log.error("export %s: its record %s is unreadable (%.100s): making it again", image_uuid, path, found)
            return None
        return found

    async def make(self, spec: StoredVolumeSpec, record: VolumeRecord, export: ExportSpec) -> dict[str, Any]:
        """The export's report: made now if it was not yet."""
        found = self.done(export.image_uuid)
        if found is not None:
            return found
        if export.snapshot_uuid is not None:
            if export.snapshot_uuid not in record.snapshots:
                raise StorageError(f"volume {spec.uuid}: no snapshot {export.snapshot_uuid} to make image "
                                   f"{export.image_uuid} from")
            source = self.layout.volume_file(spec.uuid, record.snapshots[export.snapshot_uuid])
        else:
            holder = await self.holders.holder(self.layout.volume_dir(spec.uuid))
            if holder is not None:
                raise VolumeBusy(f"volume {spec.uuid} is in use by a running VM: stop it to make image "
                                 f"{export.image_uuid} from it (or make it from a snapshot)")
            source = self.layout.volume_file(spec.uuid, record.active)
        dst = self.layout.export_file(export.image_uuid)
        dst.parent.mkdir(exist_ok=True)
        part = dst.with_name(f"{export.image_uuid}.{spec.uuid}.part")  # the volume's: `prune` knows it
        await qemuimg.convert(source, part)
        info = await qemuimg.info(part, "qcow2")
        digest = await asyncio.get_running_loop().run_in_executor(None, sha256_of, part)
        part.replace(dst)
        meta = {"image_uuid": export.image_uuid, "volume_uuid": spec.uuid, "snapshot_uuid": export.snapshot_uuid,
                "format": "qcow2", "sha256": digest, "size": dst.stat().st_size, "virtual_size": info.virtual_size,
                "path": str(dst)}
        write_atomic(self.sidecar(export.image_uuid), json.dumps(meta).encode())
        log.info("volume %s: image %s made (%d bytes)", spec.uuid, export.image_uuid, meta["size"])
        return meta

    async def upload(self, session: aiohttp.ClientSession, meta: dict[str, Any],
                     target: UploadTarget) -> dict[str, Any]:
        """Send a made export to its image store; its report, marked uploaded (recorded beside it)."""
        image = str(meta["image_uuid"])
        dest = await target(session, image)
        headers = {**dest.headers, "X-Image-Sha256": str(meta["sha256"]), "Content-Type": "application/octet-stream"}
        try:
            with open(self.layout.export_file(image), "rb") as f:
                async with session.put(dest.url, data=f, headers=headers, timeout=UPLOAD_TIMEOUT) as r:
                    answer = await r.json(content_type=None) if r.status >= 300 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise StorageError(f"image {image}: the upload to its image store failed: {e}") from e
        if r.status >= 300:
            err = answer.get("error", {}) if isinstance(answer, dict) else {}
            raise StorageError(f"image {image}: its image store refused the upload: HTTP {r.status} "
                               f"{err.get('code', '')} {err.get('message', '')}".rstrip())
        done = {**meta, "uploaded": True}
        write_atomic(self.sidecar(image), json.dumps(done).encode())
        log.info("image %s uploaded to its image store (%d bytes)", image, meta["size"])
        return done

    def prune(self, volume_uuid: str, wanted: set[str]) -> None:
        """Remove the volume's exports that its spec no longer lists (the image store has taken them), and what
        a copy cut short (a crash, a full disk) left of them."""
        folder = self.layout.root / "exports"
        if not folder.is_dir():
            return
        for sidecar in folder.glob("*.json"):
            try:
                meta = json.loads(sidecar.read_bytes())
            except (OSError, ValueError):
                continue
            if meta.get("volume_uuid") == volume_uuid and meta.get("image_uuid") not in wanted:
                self.layout.export_file(str(meta["image_uuid"])).unlink(missing_ok=True)
                sidecar.unlink(missing_ok=True)
        for part in folder.glob(f"*.{volume_uuid}.part"):
            if part.name.split(".")[0] not in wanted:
                part.unlink(missing_ok=True)
