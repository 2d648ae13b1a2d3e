"""What the storage component tells the coordinator, and when (bodies are built by pure functions).

A body is sent only when it differs from the last one sent for the same item. Figures that move all the
time (a storage's capacity, the bytes a volume's files use) are sent with the rest, or on their own at
most every `quiet` seconds: a guest writing must not turn into a report per pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agentkit.model import OBSERVED_ERROR_MAX, PrimaryStorageSpec, StoredVolumeSpec
from kvmagent.storage.record import VolumeRecord
from kvmagent.storage.volumes import Waiting

QUIET_FIELDS = ("capacity", "used")


class Reports:
    def __init__(self, report: Callable[[str, str, dict[str, Any]], object], quiet: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._report = report
        self.quiet = quiet
        self.clock = clock
        self._last: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}

    def send(self, kind: str, ident: str, body: dict[str, Any]) -> bool:
        """Report `body` unless it is old news; True when sent."""
        last = self._last.get((kind, ident))
        if last is not None:
            before, at = last
            if before == body or (_settled(before) == _settled(body) and self.clock() - at < self.quiet):
                return False
        self._last[(kind, ident)] = (body, self.clock())
        self._report(kind, ident, body)
        return True

    def retain(self, kind: str, idents: Iterable[str]) -> None:
        """Forget the last bodies of `kind` items not in `idents` (gone: one that comes back is reported)."""
        keep = set(idents)
        for key in [k for k in self._last if k[0] == kind and k[1] not in keep]:
            del self._last[key]


def _settled(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in QUIET_FIELDS}


def storage_body(spec: PrimaryStorageSpec, error: str | None, peers: list[str], capacity: dict[str, int] | None,
                 downloads: dict[str, int]) -> dict[str, Any]:
    """One storage as one host sees it: usable or why not, the hosts whose heartbeats it sees (shared
    storage), capacity (bytes: `total`, `available`, `used` by our files) and downloads in progress."""
    return {"storage_uuid": spec.uuid, "type": spec.type, "url": spec.url,
            "state": "Unavailable" if error else "Ready", "error": _short(error), "peers": peers,
            "capacity": capacity, "downloads": downloads}


def volume_body(spec: StoredVolumeSpec, result: VolumeRecord | Waiting | None, path: Path | None, used: int,
                exports: dict[str, Any], error: str | None) -> dict[str, Any]:
    """One volume: `Creating` (waiting for its image), `Ready`, `Deleted` or `Error` (never made)."""
    body: dict[str, Any] = {"storage_uuid": spec.storage_uuid, "error": _short(error)}
    if isinstance(result, VolumeRecord):
        body.update(state="Ready", size=result.size_bytes, used=used, path=str(path),
                    snapshots=sorted(result.snapshots), revert_seq=result.revert_seq,
                    image_uuid=result.image_uuid, exports=exports)
    elif isinstance(result, Waiting):
        body.update(state="Creating", image_uuid=result.image_uuid, fetched=result.done)
    else:
        body["state"] = "Deleted" if spec.deleted and error is None else "Error"
    return body


def _short(error: str | None) -> str | None:
    """What the coordinator keeps of an error message (agentkit.model.OBSERVED_ERROR_MAX)."""
    return error[:OBSERVED_ERROR_MAX] if error is not None else None
