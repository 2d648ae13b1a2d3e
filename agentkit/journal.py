"""The agent's on-disk journal of observed events.

Events get increasing sequence numbers at once (`append`, on the event loop, no I/O) and are written by
one writer task (`run`) in group commits: every event queued since the last write goes out in one
append and one fsync, in a worker thread, so a burst of events costs one fsync and the loop never waits
on the disk. Only written events are handed to the link (`batch`), and they are removed only after the
coordinator acknowledged them and that acknowledgement is itself on disk (`ack`). Nothing is lost
while the coordinator is unreachable or across an agent restart; the coordinator stores each sequence
once, so a re-send applies nothing twice. Every file is replaced durably (synced, renamed, its directory
synced). An acknowledgement beyond this journal's sequence (a state directory older than what the host
reported) renumbers the events after it rather than dropping them.

State changes only after the write that records it succeeded: a failed write (EMFILE, ENOSPC, EIO)
leaves the events queued, in order, and the writer retries with capped backoff (logged once per
failure streak, then every `LOG_EVERY` seconds); a failed `ack` raises and leaves both the pending
events and the acknowledged sequence as they were. A write cut short is cut off the file before the
next one (the file is kept at its last known good size), so a retried batch never lands behind a torn
line.

Most reports only replace their object's record at the coordinator, which keeps the newest of each kind and id
(`newest_wins`): such a report makes the unacknowledged one before it about the same object redundant, and that
one is dropped, so a coordinator away for days finds one report per object, not every change since. It leaves
memory once the report replacing it is written (an unwritten one at once), and the file at the next compaction,
never before that report is on disk. Sequence numbers stay as they were: the coordinator takes gaps, and a
batch in flight is sent as it was. As a safety net, past `MAX_EVENTS` unacknowledged events the oldest newest-wins
one is dropped (with none, the oldest of all), logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from itertools import chain
from pathlib import Path
from typing import Any

from agentkit.durable import fsync_dir, write_atomic
from agentkit.model import ObservedEvent

log = logging.getLogger(__name__)
COMPACT_AFTER = 1000  # acknowledgements between rewrites of the file (also whenever nothing is pending); the
# writer rewrites it too once the lines of dropped events outnumber both this and the pending events
MAX_EVENTS = 50_000  # unacknowledged events kept: one report per object of a host (hundreds of VMs) fits many times
BATCH = 100  # events per upload: one put each plus the host's sequence, within etcd's 128 operations per txn
RETRY_MAX = 5.0  # seconds between attempts while writes fail
LOG_EVERY = 30.0  # seconds between log lines of one failure streak


def newest_wins(ev: ObservedEvent) -> bool:
    """Does the coordinator do nothing with `ev` but keep it as its object's record until a newer one comes
    (coordinator/domain/observed.py `_store_part`, `_follow_up`)? A live migration's steps, an adopted drift,
    an install's boot order, a volume's deletion, a volume migration's end, each do something of their own;
    a health change is logged: those are all delivered."""
    body = ev.body
    if ev.kind == "vm":
        return not any(body.get(step) for step in ("prepared", "migrated", "arrived", "kept", "drift", "installed"))
    if ev.kind == "volume":
        return body.get("state") != "Deleted"
    if ev.kind == "migration":
        return body.get("state") != "Verified"
    return ev.kind in ("lease", "storage")


class Journal:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "observed.jsonl"
        self.acked_path = self.dir / "acked"
        self.acked = self._read_acked()
        self.pending: list[ObservedEvent] = []  # written, not yet acknowledged: what the link sends
        self.queued: list[ObservedEvent] = []  # appended, not written yet
        self._newest: dict[tuple[str, str], int] = {}  # (kind, id) -> its newest-wins event kept, oldest first
        self._dropped: dict[int, int] = {}  # seq of an event to drop -> seq of its replacement (0: the cap's)
        self._dead = 0  # lines in the file of events dropped since it was last rewritten
        self.capped = 0  # events the cap dropped
        self._capped_logged_at = -LOG_EVERY
        self._size = 0  # bytes of the file known to hold whole lines
        self.seq = self.acked  # the last number given: the file's last line's (dropped or not), else acknowledged
        self._load()
        self.changed = asyncio.Event()  # set when events become pending
        self._wake = asyncio.Event()
        self._io = asyncio.Lock()  # one file operation at a time (appends, compactions)
        self._acks_since_compact = 0
        self._failing_since: float | None = None
        self._logged_at = 0.0

    def _read_acked(self) -> int:
        """The acknowledged sequence on disk; 0 if there is none or it cannot be read (left empty by a crash
        under an older agent, or damaged): everything in the file is sent again then, which the coordinator
        acknowledges without storing it twice (and if its sequence is ahead of ours, `ack` renumbers)."""
        try:
            return int(self.acked_path.read_text())
        except FileNotFoundError:
            return 0
        except (ValueError, UnicodeDecodeError) as e:
            log.warning("journal: acknowledged sequence unreadable (%s): sending every event in it again", e)
            return 0

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()  # bytes: a line torn inside a character is no valid UTF-8
        for line in data.splitlines():
            try:
                ev = ObservedEvent.model_validate_json(line)
            except ValueError:
                continue  # a torn last line after a crash: it was never acknowledged nor sent whole
            self.seq = max(self.seq, ev.seq)  # it may have been sent: its number is never given again
            if ev.seq > self.acked:
                self.pending.append(ev)
        self._size = len(data)
        self._reindex()  # each report replaced by a later one in the file goes
        if data and not data.endswith(b"\n"):
            self._size = self._rewrite(self.pending)  # drop the torn tail: the next append starts a fresh line
            self._dead = 0

    def append(self, kind: str, ident: str, body: dict[str, Any]) -> ObservedEvent:
        """Record one observed fact: queued at once, written by the writer task, then sent by the link."""
        self.seq += 1
        ev = ObservedEvent(seq=self.seq, kind=kind, id=ident, body=body, at=time.time())
        self.queued.append(ev)
        self._note(ev)
        self._cap()
        self._wake.set()
        return ev

    def _note(self, ev: ObservedEvent) -> None:
        """Mark the event of the same kind and id that `ev` replaces, if both are newest-wins."""
        if not newest_wins(ev):
            return
        older = self._newest.pop((ev.kind, ev.id), None)
        if older is not None:
            self._dropped[older] = ev.seq
        self._newest[(ev.kind, ev.id)] = ev.seq

    def _reindex(self) -> None:
        """Mark what replaces what among every event kept (after they were loaded or renumbered), apply the
        cap, and drop what may go."""
        self._newest, self._dropped = {}, {}
        for ev in chain(self.pending, self.queued):
            self._note(ev)
        self._cap()
        self._prune()

    def _cap(self) -> None:
        """Past MAX_EVENTS events kept, mark the oldest newest-wins one (its object's record stays older at the
        coordinator until the agent reports on it again), with none of those the oldest of all."""
        while len(self.pending) + len(self.queued) - len(self._dropped) > MAX_EVENTS:
            if self._newest:
                (kind, ident), seq = next(iter(self._newest.items()))
                del self._newest[kind, ident]
            else:
                ev = next(e for e in chain(self.pending, self.queued) if e.seq not in self._dropped)
                kind, ident, seq = ev.kind, ev.id, ev.seq
            self._dropped[seq] = 0
            self.capped += 1
            now = time.monotonic()
            if now - self._capped_logged_at >= LOG_EVERY:
                self._capped_logged_at = now
                log.error("journal: more than %d events unacknowledged, the oldest dropped (%s %s, %d dropped so "
                          "far)", MAX_EVENTS, kind, ident, self.capped)

    def _prune(self) -> None:
        """Remove the marked events that may go: one the cap dropped, one never written, one whose replacement
        is written (until then the file must keep it, and a compaction writes what is pending)."""
        written = self.pending[-1].seq if self.pending else self.acked
        gone = {seq for seq, by in self._dropped.items() if by <= written or seq > written}
        if not gone:
            return
        kept = [e for e in self.pending if e.seq not in gone]
        self._dead += len(self.pending) - len(kept)
        self.pending = kept
        self.queued = [e for e in self.queued if e.seq not in gone]
        self._dropped = {seq: by for seq, by in self._dropped.items() if seq not in gone}

    async def run(self) -> None:
        """The writer: group-commits whatever is queued, retrying failed writes with capped backoff."""
        delay = 0.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queued:
                try:
                    await self.flush()
                except OSError as e:
                    delay = min(max(delay * 2, 0.05), RETRY_MAX)
                    self._failed(e, len(self.queued), delay)
                    await asyncio.sleep(delay)
                    continue
                delay = 0.0
                if self._failing_since is not None:
                    log.warning("journal writable again after %.1f s", time.monotonic() - self._failing_since)
                    self._failing_since = None

    def _failed(self, e: OSError, queued: int, delay: float) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = self._logged_at = now
        elif now - self._logged_at < LOG_EVERY:
            return
        self._logged_at = now
        log.error("journal write failed: %s (%d events kept queued, retry in %.2f s)", e, queued, delay,
                  extra={"fields": {"failing_for": round(now - self._failing_since, 1)}})

    async def flush(self) -> None:
        """Write every queued event in one append and one fsync; on OSError they stay queued (and it raises)."""
        async with self._io:
            self._prune()  # while writes fail too: what was replaced meanwhile goes, memory stays bounded
            batch = list(self.queued)
            if not batch:
                return
            self._size = await asyncio.to_thread(self._append, batch, self._size)
            del self.queued[:len(batch)]
            self.pending.extend(batch)
            self.changed.set()
            self._prune()  # the events this batch replaces
            if self._dead > max(len(self.pending), COMPACT_AFTER):
                await self._compact()

    def _append(self, batch: list[ObservedEvent], size: int) -> int:
        """(worker thread) Append `batch` after the first `size` bytes and fsync; returns the new size."""
        data = "".join(e.model_dump_json() + "\n" for e in batch).encode()
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)  # the rest of a write that failed halfway
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.dir)  # the file itself must survive a power loss, not only its lines
        return size + len(data)

    def batch(self, limit: int = BATCH) -> list[ObservedEvent]:
        """The oldest written events not yet acknowledged, in order."""
        return self.pending[:limit]

    async def ack(self, seq: int) -> None:
        """The coordinator stored everything up to `seq`: record that on disk, then drop those events.
        Raises OSError when the record cannot be written; nothing changes then (the link retries)."""
        if seq <= self.acked:
            return
        async with self._io:
            if seq > self.seq:
                await self._renumber(seq)
            await asyncio.to_thread(self._write_acked, seq)
            self.acked = seq
            self.pending = [e for e in self.pending if e.seq > seq]
            self._newest = {key: s for key, s in self._newest.items() if s > seq}
            self._dropped = {s: by for s, by in self._dropped.items() if s > seq}
            self._acks_since_compact += 1
            if self._acks_since_compact >= COMPACT_AFTER or not self.pending:
                await self._compact()
                self._acks_since_compact = 0

    async def _compact(self) -> None:
        """Rewrite the file with the pending events alone (the caller holds `_io`). A failure is harmless:
        acknowledged lines are skipped and replaced ones dropped again when the journal is loaded."""
        try:
            self._size = await asyncio.to_thread(self._rewrite, list(self.pending))
        except OSError as e:
            log.warning("journal compaction failed: %s", e)
            return
        self._dead = 0

    async def _renumber(self, acked: int) -> None:
        """The coordinator has stored sequences up to `acked`, beyond any of this journal's: the state
        directory is older than what the host reported (wiped, or restored from an older disk). Its events
        were not stored; renumbered after `acked` (on disk first), they and every later one are."""
        log.warning("journal: the coordinator has events up to %d, this journal only up to %d (its state is "
                    "older): renumbering %d events after it", acked, self.seq, len(self.pending) + len(self.queued))
        pending = [e.model_copy(update={"seq": acked + i}) for i, e in enumerate(self.pending, 1)]
        self._size = await asyncio.to_thread(self._rewrite, pending)
        self.pending = pending
        self.queued = [e.model_copy(update={"seq": acked + len(pending) + i}) for i, e in enumerate(self.queued, 1)]
        self.seq = acked + len(pending) + len(self.queued)
        self._dead = 0
        self._reindex()

    def _write_acked(self, seq: int) -> None:
        write_atomic(self.acked_path, str(seq).encode())

    def _rewrite(self, events: list[ObservedEvent]) -> int:
        """Replace the file by `events` (tmp + rename); returns its size."""
        data = "".join(e.model_dump_json() + "\n" for e in events).encode()
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the unacknowledged events must survive the rename
        os.replace(tmp, self.path)
        fsync_dir(self.dir)  # and so must the rename
        return len(data)
