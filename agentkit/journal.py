"""The agent's on-disk journal of observed events.

Events are appended (fsync'd JSON lines) with increasing sequence numbers and removed only after the
coordinator acknowledges them, so nothing is lost while the coordinator is unreachable or across an
agent restart; the coordinator stores each sequence once, so a re-send applies nothing twice.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from agentkit.model import ObservedEvent

COMPACT_AFTER = 1000


class Journal:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "observed.jsonl"
        self.acked_path = self.dir / "acked"
        self.acked = int(self.acked_path.read_text()) if self.acked_path.exists() else 0
        self.pending: list[ObservedEvent] = []
        self._load()
        self.seq = self.pending[-1].seq if self.pending else self.acked
        self.changed = asyncio.Event()
        self._acks_since_compact = 0

    def _load(self) -> None:
        if not self.path.exists():
            return
        text = self.path.read_text()
        for line in text.splitlines():
            try:
                ev = ObservedEvent.model_validate_json(line)
            except ValueError:
                continue  # a torn last line after a crash: it was never acknowledged nor sent whole
            if ev.seq > self.acked:
                self.pending.append(ev)
        if text and not text.endswith("\n"):
            self._compact()  # drop the torn tail so the next append starts on a fresh line

    def append(self, kind: str, ident: str, body: dict[str, Any]) -> ObservedEvent:
        """Record one observed fact durably; it is sent by the link in order."""
        self.seq += 1
        ev = ObservedEvent(seq=self.seq, kind=kind, id=ident, body=body, at=time.time())
        with open(self.path, "a") as f:
            f.write(ev.model_dump_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.pending.append(ev)
        self.changed.set()
        return ev

    def batch(self, limit: int = 500) -> list[ObservedEvent]:
        return self.pending[:limit]

    def ack(self, seq: int) -> None:
        """The coordinator stored everything up to `seq`: drop it here."""
        if seq <= self.acked:
            return
        self.acked = seq
        tmp = self.acked_path.with_suffix(".tmp")
        tmp.write_text(str(seq))
        os.replace(tmp, self.acked_path)
        self.pending = [e for e in self.pending if e.seq > seq]
        self._acks_since_compact += 1
        if self._acks_since_compact >= COMPACT_AFTER or not self.pending:
            self._compact()

    def _compact(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(e.model_dump_json() + "\n" for e in self.pending))
        os.replace(tmp, self.path)
        self._acks_since_compact = 0
