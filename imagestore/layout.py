"""The store's directory: where an image lives at each stage, and the only code that moves it.

    <root>/images/<id>/data           a ready image (mode 0444), served as is
    <root>/images/<id>/image.json     its record (ImageRecord); a ready image is a directory with one
    <root>/partial/<id>/data          a download in progress (sparse: all-zero chunks are holes)
    <root>/partial/<id>/download.json its resume state (DownloadState)
    <root>/trash/<id>.<random>/       being removed
    <root>/lock                       held (flock) by the agent using the directory

An image becomes ready by one rename of its directory from partial/ to images/ (same filesystem), and
disappears by one rename into trash/, so a reader never sees half an image; open files keep reading.
Records are written to a temp file, fsync'd and renamed, and the directory fsync'd.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from agentkit import dirlock
from agentkit.durable import fsync_dir, write_atomic
from imagestore.errors import RootUnusable
from imagestore.wire import AddRequest, Format, MediaType

M = TypeVar("M", bound=BaseModel)
DATA, RECORD, STATE = "data", "image.json", "download.json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class ImageRecord(BaseModel):
    """What the store knows of a ready image (image.json)."""

    id: str
    request: AddRequest
    format: Format
    media_type: MediaType
    size: int
    virtual_size: int
    sha256: str
    md5: str | None  # until computed after the image became ready (when no md5 was given to check)
    created_at: float
    boot_id: str | None = None  # the boot it was written in
    synced: bool = True  # its data is on disk (not only in the page cache of `boot_id`)


class DownloadState(BaseModel):
    """A download's resume point (download.json): the first `durable` bytes were fsync'd; on the same
    boot every byte in the file was written (the page cache survives a crashed process)."""

    id: str
    request: AddRequest
    boot_id: str
    durable: int = 0
    total: int | None = None
    validator: str | None = None  # the source's strong ETag or Last-Modified, for If-Range
    created_at: float


def boot_id() -> str:
    return BOOT_ID.read_text().strip()



def write_json(path: Path, model: BaseModel) -> None:
    write_atomic(path, model.model_dump_json().encode())


def read_json(path: Path, model: type[M]) -> M | None:
    """The record, or None when it is missing or unreadable (a torn write cannot happen: rename)."""
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def _remove(path: Path) -> None:
    """Delete an image's directory, or what else was found in its place (an operator's file or symlink)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


class Layout:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.images, self.partial, self.trash = self.root / "images", self.root / "partial", self.root / "trash"

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The directory for this process alone, prepared: a second agent given the same root (two image stores
        on one host) would resume the first one's downloads into the same files and remove its new ones as
        junk. RootUnusable when another holds it or it cannot be created or written (read-only, full)."""
        with contextlib.ExitStack() as lock:
            try:
                lock.enter_context(dirlock.held(self.root, "imagestore"))
                self.prepare()
            except dirlock.DirectoryUnusable as e:
                raise RootUnusable(root=str(self.root), reason=e.kwargs["reason"]) from e
            except OSError as e:
                raise RootUnusable(root=str(self.root), reason=e.strerror or str(e)) from e
            yield

    def prepare(self) -> None:
        """Create the directories and finish removals a crash interrupted."""
        for d in (self.images, self.partial, self.trash):
            d.mkdir(exist_ok=True, mode=0o750)
        for leftover in self.trash.iterdir():
            with contextlib.suppress(OSError):
                _remove(leftover)

    def image_dir(self, image_id: str) -> Path:
        return self.images / image_id

    def partial_dir(self, image_id: str) -> Path:
        return self.partial / image_id

    def data(self, image_id: str) -> Path:
        return self.image_dir(image_id) / DATA

    def ready(self) -> list[tuple[Path, ImageRecord | None]]:
        return [(d, read_json(d / RECORD, ImageRecord)) for d in sorted(self.images.iterdir())]

    def downloads(self) -> list[tuple[Path, DownloadState | None]]:
        return [(d, read_json(d / STATE, DownloadState)) for d in sorted(self.partial.iterdir())]

    def start(self, state: DownloadState) -> Path:
        d = self.partial_dir(state.id)
        d.mkdir(exist_ok=True)
        write_json(d / STATE, state)
        return d

    def publish(self, record: ImageRecord) -> None:
        """partial/<id> becomes images/<id> with its record, in one rename."""
        src = self.partial_dir(record.id)
        os.chmod(src / DATA, 0o444)
        write_json(src / RECORD, record)
        (src / STATE).unlink(missing_ok=True)  # an upload has none
        os.rename(src, self.image_dir(record.id))
        fsync_dir(self.images)
        fsync_dir(self.partial)

    def rewrite(self, record: ImageRecord) -> None:
        """A ready image's record, updated."""
        write_json(self.image_dir(record.id) / RECORD, record)

    def discard(self, path: Path) -> None:
        """Remove an image's directory (ready or partial): gone at once by a rename, deleted after."""
        doomed = self.trash / f"{path.name}.{secrets.token_hex(4)}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, doomed)
            _remove(doomed)

    def available(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def space(self) -> tuple[int, int]:
        """(total, available to us) in bytes of the filesystem: one statvfs."""
        st = os.statvfs(self.root)
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    @staticmethod
    def allocated(data: Path) -> int:
        """The bytes a data file takes on disk (holes take none); 0 when it is gone."""
        try:
            return data.stat().st_blocks * 512
        except FileNotFoundError:
            return 0
