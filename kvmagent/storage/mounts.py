"""Is a storage's directory usable on this host? Mount points, the shared marker, heartbeats.

A SharedMountPoint's `url` must be where the shared filesystem is mounted: the path is a mount point in
this process's mount namespace (read from `/proc/self/mountinfo`: a bind mount from the same filesystem
keeps the device number, so `os.path.ismount` cannot tell), or it carries our marker file naming the
storage (for a `url` that is a directory inside the mounted filesystem). A host that sees it mounted
writes the marker (replacing one that a deleted storage of the same path left). Without either, the
directory is the host's own disk: writing volumes there would split the storage silently, so nothing
is written and the host reports it.

Each host then writes a heartbeat file there (which also proves the filesystem is writable) and reads
the others': hosts that see each other's heartbeats share one filesystem.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from agentkit.durable import write_atomic
from agentkit.model import PrimaryStorageSpec
from kvmagent.errors import StorageUnavailable
from kvmagent.storage.layout import Layout

log = logging.getLogger(__name__)
MOUNTINFO = "/proc/self/mountinfo"


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (`\\040`)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points(mountinfo: str) -> set[str]:
    """The mount points listed in a mountinfo text (field 5)."""
    return {unescape(line.split()[4]) for line in mountinfo.splitlines() if len(line.split()) > 4}


def where(spec: PrimaryStorageSpec, host: str) -> str:
    return f"primary storage {spec.name} ({spec.type} {spec.uuid}): {spec.url} on host {host}"


def check_shared(spec: PrimaryStorageSpec, host: str, mountinfo: str) -> None:
    """StorageUnavailable unless `spec.url` is a mount point here or carries the storage's marker; writes
    the marker on a mount point that has none."""
    layout = Layout(Path(spec.url))
    mounted = os.path.realpath(spec.url) in mount_points(mountinfo)
    marked = _marker(layout, spec, host, mounted)
    if mounted:
        if marked != spec.uuid:
            try:
                write_atomic(layout.marker, json.dumps({"uuid": spec.uuid, "name": spec.name}).encode())
            except OSError as e:
                raise StorageUnavailable(f"{where(spec, host)}: cannot write {layout.marker}: {e.strerror}") from e
        return
    if marked is None:
        raise StorageUnavailable(f"{where(spec, host)} is not mounted (not a mount point, and no "
                                 f"{layout.marker.name} marker of this storage in it)")


def _marker(layout: Layout, spec: PrimaryStorageSpec, host: str, mounted: bool) -> str | None:
    """The storage uuid in the marker, or None. One naming another storage is what a deleted storage of the
    same path left (the coordinator gives a path to one storage at a time), and one that cannot be read is
    damaged: taken over where the path is mounted, StorageUnavailable elsewhere (this host cannot tell which
    filesystem it sees)."""
    try:
        found = str(json.loads(layout.marker.read_bytes()).get("uuid"))
    except FileNotFoundError:
        return None
    except (ValueError, AttributeError) as e:
        if not mounted:
            raise StorageUnavailable(f"{where(spec, host)}: unreadable marker {layout.marker}: {e}") from e
        log.error("%s: unreadable marker %s (%s): the path is mounted, the marker is written again", where(spec, host),
                  layout.marker, e)
        return None
    except OSError as e:
        raise StorageUnavailable(f"{where(spec, host)}: unreadable marker {layout.marker}: {e}") from e
    if found != spec.uuid and not mounted:
        raise StorageUnavailable(f"{where(spec, host)} holds primary storage {found} (its marker says so), not "
                                 f"{spec.uuid}")
    return found


def ensure_local(spec: PrimaryStorageSpec, host: str) -> None:
    """A LocalStorage directory exists (made if missing) and is writable."""
    try:
        Path(spec.url).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageUnavailable(f"{where(spec, host)}: cannot create it: {e.strerror}") from e
    if not os.access(spec.url, os.W_OK | os.X_OK):
        raise StorageUnavailable(f"{where(spec, host)} is not writable")


def beat(spec: PrimaryStorageSpec, host_uuid: str, host: str, now: float | None = None) -> None:
    """Write this host's heartbeat (StorageUnavailable when the filesystem refuses the write)."""
    layout = Layout(Path(spec.url))
    path = layout.heartbeat(host_uuid)
    try:
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, json.dumps({"host": host_uuid, "at": time.time() if now is None else now}).encode())
    except OSError as e:
        raise StorageUnavailable(f"{where(spec, host)}: heartbeat {path} not written: {e.strerror}") from e


def peers(spec: PrimaryStorageSpec, fresh: float, now: float | None = None) -> list[str]:
    """The hosts whose last heartbeat on the storage is less than `fresh` seconds old, sorted. Each stamped it
    with its own clock: one stamped further ahead than that is not counted either (its clock is off, or a
    host that stamped years ahead would be counted for years after it stopped)."""
    now = time.time() if now is None else now
    out = []
    folder = Layout(Path(spec.url)).root / "heartbeat"
    for entry in folder.glob("*") if folder.is_dir() else ():
        if entry.name.startswith("."):
            continue  # a heartbeat being written (write_atomic's temporary file), or one a crash left
        try:
            if abs(now - float(json.loads(entry.read_bytes())["at"])) < fresh:
                out.append(entry.name)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(out)


def read_mountinfo(path: str = MOUNTINFO) -> str:
    return Path(path).read_text()
