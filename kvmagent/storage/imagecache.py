"""One storage's image cache: each image fetched once, verified, kept read-only, collected when unused.

`want(image)` answers the cached copy, or starts its download in the background (one per image, however
many volumes wait) and answers None; the cache calls `on_change` when a download ends so the component
looks again. A download is verified (size, sha256 — `fetch.py`), then checked with `qemu-img info` told
the format (a qcow2 image may not name a backing file), made read-only and renamed into place with its
`image.json`. On a SharedMountPoint the cache is the storage's, shared by every host: two hosts that
need a new image at the same moment may both fetch it (each into its own partial file); the second
rename replaces the first with the same bytes.

An image is in use while a volume record on the storage names it or a host pins it (an ISO in a cdrom).
Each collection stamps the images in use (`last-used`) and removes those unused for `cache_grace`
seconds; a host about to create an overlay stamps the image first, so a collection on another host
that read the volume records a moment earlier still keeps it. It also finishes the removals (of images,
and of deleted volumes) that a crash cut short between their rename into a trash and their deletion.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from agentkit.durable import fsync_dir, write_atomic
from agentkit.model import ImageRef
from agentkit.proc import ProcessError
from agentkit.supervise import Supervisor
from kvmagent.errors import ImageFetchError, StorageError
from kvmagent.storage import qemuimg
from kvmagent.storage.layout import RECORD, Layout

log = logging.getLogger(__name__)
Fetch = Callable[[ImageRef, Path, Callable[[int], None]], Awaitable[None]]
RETRY_AFTER = 30.0  # seconds before a failed download is tried again
META, LAST_USED, TRASH = "image.json", "last-used", ".trash"
# Seconds after which a removal that a crash cut short is finished: a younger entry of a trash may be another host's
# collection about to move it back, and the hosts' clocks (and the file server's) differ.
TRASH_AGE = 600.0


@dataclass(frozen=True)
class Cached:
    path: Path
    format: str
    virtual_size: int


class ImageCache:
    def __init__(self, layout: Layout, host_uuid: str, fetch: Fetch, tasks: Supervisor,
                 on_change: Callable[[], None]):
        self.layout = layout
        self.host_uuid = host_uuid
        self._fetch = fetch
        self._tasks = tasks
        self._on_change = on_change
        self.progress: dict[str, int] = {}  # image uuid -> bytes downloaded so far (downloads in progress)
        self._failed: dict[str, tuple[str, float]] = {}  # image uuid -> (why, when)

    def lookup(self, image: ImageRef) -> Cached | None:
        """The verified copy of `image`; None when there is none, or its record cannot be read (it is fetched
        again, and the record rewritten); StorageError if the cache holds other bytes under its uuid."""
        path = self.layout.image_dir(image.uuid) / META
        try:
            meta = json.loads(path.read_bytes())
            sha256, virtual_size = meta["sha256"], int(meta["virtual_size"])
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"image {image.uuid}: unreadable cache entry {path}: {e}") from e
        except (ValueError, TypeError, KeyError) as e:
            log.error("image %s: its cache record %s is unreadable (%s: %.100s): fetching it again", image.uuid, path,
                      type(e).__name__, e)
            return None
        if sha256 != image.sha256:
            raise StorageError(f"image {image.uuid}: the cache holds sha256 {sha256}, the image store now says "
                               f"{image.sha256}")
        return Cached(self.layout.image_file(image.uuid, image.format), image.format, virtual_size)

    def want(self, image: ImageRef) -> Cached | None:
        """The cached image, or None while it is fetched; ImageFetchError after a failed download (until
        it is retried, RETRY_AFTER seconds later)."""
        cached = self.lookup(image)
        if cached is not None or image.uuid in self.progress:
            return cached
        why, when = self._failed.get(image.uuid, ("", 0.0))
        if why and time.monotonic() - when < RETRY_AFTER:
            raise ImageFetchError(why)
        self.progress[image.uuid] = 0
        self._tasks.start(self._download(image), name=f"fetch image {image.uuid}")
        return None

    async def _download(self, image: ImageRef) -> None:
        partial = self.layout.partial(image.uuid, self.host_uuid)
        try:
            await self._fetch(image, partial, lambda n: self.progress.__setitem__(image.uuid, n))
            await self._install(image, partial)
            self._failed.pop(image.uuid, None)
            log.info("image %s cached in %s", image.uuid, self.layout.root)
        except (StorageError, ProcessError, OSError) as e:  # OSError: the storage's filesystem (full, read-only, I/O)
            log.error("image %s: %s", image.uuid, e)
            now = time.monotonic()
            # a failure past RETRY_AFTER counts for nothing: forgotten, or images never asked for again pile up
            self._failed = {u: (why, when) for u, (why, when) in self._failed.items() if now - when < RETRY_AFTER}
            self._failed[image.uuid] = (str(e), now)
        finally:
            self.progress.pop(image.uuid, None)
            self._on_change()

    async def _install(self, image: ImageRef, partial: Path) -> None:
        """Check the verified download as the format it claims, then make it the cached copy."""
        fmt = "raw" if image.format == "iso" else image.format
        try:
            info = await qemuimg.info(partial, fmt)
        except ProcessError as e:
            partial.unlink(missing_ok=True)
            raise ImageFetchError(f"image {image.uuid} is not a readable {image.format} image: {e.stderr.strip()}") \
                from e
        if info.backing is not None:
            partial.unlink(missing_ok=True)
            raise ImageFetchError(f"image {image.uuid} names a backing file ({info.backing}): not accepted")
        folder = self.layout.image_dir(image.uuid)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(partial, 0o444)
        os.replace(partial, self.layout.image_file(image.uuid, image.format))
        fsync_dir(folder)
        self.touch(image.uuid)
        meta = {"uuid": image.uuid, "sha256": image.sha256, "size": image.size, "format": image.format,
                "virtual_size": info.virtual_size, "cached_at": time.time()}
        write_atomic(folder / META, json.dumps(meta).encode())

    def touch(self, image_uuid: str) -> None:
        """Stamp the image as in use now (keeps it from collection for `cache_grace`)."""
        try:
            (self.layout.image_dir(image_uuid) / LAST_USED).write_text(f"{time.time()}\n")
        except OSError as e:  # collected by another host a moment ago: fetched again
            raise StorageError(f"image {image_uuid}: cannot stamp its cache entry: {e.strerror}") from e

    def pin(self, image_uuid: str, pinned: bool) -> None:
        """This host uses (or no longer uses) the image outside any volume, e.g. as an ISO."""
        pin = self.layout.pin(image_uuid, self.host_uuid)
        if pinned:
            pin.parent.mkdir(parents=True, exist_ok=True)
            pin.touch()
            self.touch(image_uuid)
        else:
            pin.unlink(missing_ok=True)

    def in_use(self) -> set[str]:
        """Images a volume record on the storage names, or that a host pins."""
        used = set()
        for record in self.layout.volumes.glob(f"*/{RECORD}"):
            try:
                image = json.loads(record.read_bytes()).get("image_uuid")
            except (OSError, ValueError):
                continue  # being replaced or removed: its image is stamped anyway
            if image:
                used.add(str(image))
        for pins in self.layout.images.glob("*/pins"):
            if any(pins.iterdir()):
                used.add(pins.parent.name)
        return used

    def collect(self, grace: float, now: float | None = None) -> list[str]:
        """Remove the images nothing has used for `grace` seconds; stamp the ones in use. Returns the removed.
        StorageError when the storage's filesystem fails (the next collection tries again)."""
        try:
            return self._collect(grace, time.time() if now is None else now)
        except OSError as e:
            raise StorageError(f"image cache of {self.layout.root} not collected: {e}") from e

    def _collect(self, grace: float, now: float) -> list[str]:
        for trash in (self.layout.images / TRASH, self.layout.trash):
            _empty(trash, now)
        self._drop_partials(grace, now)
        used = self.in_use()
        removed = []
        for folder in sorted(self.layout.images.glob("*")) if self.layout.images.is_dir() else ():
            name = folder.name
            if name.startswith(".") or name in self.progress:
                continue
            if name in used:
                self.touch(name)
                continue
            seen = _mtime(folder / LAST_USED)
            if now - seen < grace:
                continue
            trash = self.layout.images / TRASH / f"{name}.{uuidlib.uuid4().hex[:8]}"
            trash.parent.mkdir(exist_ok=True)
            try:
                os.replace(folder, trash)  # atomic: a host looking it up now sees it whole or not at all
            except FileNotFoundError:  # another host of the storage collected it a moment ago
                continue
            if _mtime(trash / LAST_USED) > seen:  # another host stamped it meanwhile: it is about to be used
                os.replace(trash, folder)
                continue
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(name)
            log.info("image %s removed from the cache of %s (unused for %.0f s)", name, self.layout.root, grace)
        return removed

    def _drop_partials(self, grace: float, now: float) -> None:
        """Remove this host's partial downloads (kept to be resumed) that no download took up for `grace` seconds:
        a crash or a failure cut them short, and nothing asked for their image since."""
        for partial in self.layout.partials.glob(f"*.{self.host_uuid}.part"):
            if partial.name.split(".")[0] not in self.progress and now - _mtime(partial) >= grace:
                partial.unlink(missing_ok=True)
                log.info("removed %s, a download nothing resumed for %.0f s", partial, grace)


def _empty(trash: Path, now: float) -> None:
    """Finish the removals a crash cut short: what was renamed into `trash` (which sets its ctime) TRASH_AGE ago."""
    for leftover in trash.iterdir() if trash.is_dir() else ():
        try:
            if now - leftover.lstat().st_ctime >= TRASH_AGE:
                shutil.rmtree(leftover, ignore_errors=True)
                log.info("removed %s, left by a removal a crash cut short", leftover)
        except FileNotFoundError:  # another host of the storage finished it a moment ago
            continue


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
