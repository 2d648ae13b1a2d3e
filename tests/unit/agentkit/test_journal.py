"""agentkit.journal: every event is on disk (whole lines, group-committed off the event loop) before it
counts; acknowledged ones go, once the acknowledgement is durable; a disk that fails loses nothing and
changes nothing; a journal older than the coordinator's sequence renumbers rather than loses its events.
A report that only replaces its object's record drops the unacknowledged one before it (so the tests of the
rest report on distinct objects), never from the file before it is written itself; past a cap the oldest goes.

A path that cannot be written is made by putting a directory where the journal wants a file (EISDIR:
to the journal, an OSError from the write like EMFILE or ENOSPC); a write cut short by a stand-in for
`os.write` that fails once halfway. The link's side (uploads that back off): test_link.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from agentkit import journal as journal_module
from agentkit.journal import Journal
from agentkit.model import ObservedEvent

TMP = re.compile(r"\.[0-9a-f]{12}\.tmp$")  # durable.write_atomic's temporary file: its random part


async def until(cond: Callable[[], object], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def writer() -> AsyncIterator[Callable[[Journal], Journal]]:
    """Runs a journal's writer task for the test."""
    tasks: list[asyncio.Task[None]] = []

    def start(j: Journal) -> Journal:
        tasks.append(asyncio.create_task(j.run()))
        return j

    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_journal_survives_restart_torn_line_and_an_empty_acknowledgement(tmp_path):
    j = Journal(tmp_path)
    for i in range(3):
        j.append("vm", f"v{i}", {"n": i})
    await j.flush()
    await j.ack(1)
    with open(j.path, "a") as f:
        f.write('{"seq": 4, "kind": "vm", "id"')   # a crash mid-write
    j2 = Journal(tmp_path)
    assert [e.seq for e in j2.pending] == [2, 3]
    assert j2.append("vm", "x", {}).seq == 4
    await j2.flush()
    assert [e.seq for e in Journal(tmp_path).pending] == [2, 3, 4]
    j.acked_path.write_text("")  # as a crash could leave it before acknowledgements were synced
    again = Journal(tmp_path)  # starts, and sends all again: the coordinator acknowledges, stores nothing twice
    assert (again.acked, [e.seq for e in again.pending]) == (0, [2, 3, 4])


async def test_the_torn_tail_is_dropped_from_the_file_at_once(tmp_path):
    j = Journal(tmp_path)
    j.append("vm", "v1", {"n": 1})
    await j.flush()
    with open(j.path, "a") as f:
        f.write('{"seq": 2, "ki')
    Journal(tmp_path)
    assert j.path.read_text().endswith("}\n") and len(j.path.read_text().splitlines()) == 1


async def test_a_tail_torn_inside_a_character_is_dropped_and_whole_lines_are_kept(tmp_path):
    j = Journal(tmp_path)
    j.append("vm", "v1", {"error": "disque\u2028plein"})  # JSON leaves U+2028 as it is: a line break to str
    await j.flush()
    torn = ObservedEvent(seq=2, kind="vm", id="v2", body={"error": "disque réservé"}, at=1.0).model_dump_json()
    with open(j.path, "ab") as f:
        f.write(torn.encode()[:torn.index("é") + 1])  # a crash mid-write, between the two bytes of "é"
    again = Journal(tmp_path)  # starts: no UnicodeDecodeError at every restart
    assert [e.body for e in again.pending] == [{"error": "disque\u2028plein"}]
    assert again.append("vm", "v3", {}).seq == 2
    await again.flush()
    assert [e.seq for e in Journal(tmp_path).pending] == [1, 2]


async def test_each_event_is_a_whole_line_on_disk_when_fsync_returns(tmp_path, monkeypatch):
    synced: list[list[str]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        if stat.S_ISREG(os.fstat(fd).st_mode):  # the file's (its directory's too, when it is created)
            synced.append((tmp_path / "observed.jsonl").read_text().splitlines(keepends=True))

    monkeypatch.setattr(journal_module.os, "fsync", fsync)
    j = Journal(tmp_path)
    events = []
    for i in range(3):
        events.append(j.append("vm", f"vm-{i}", {"state": "Running"}))
        assert j.batch(3) == events[:-1]  # not handed to the link before it is written
        await j.flush()
    assert [[line.endswith("\n") for line in lines] for lines in synced] == [[True], [True, True], [True] * 3]
    assert [e.seq for e in events] == [1, 2, 3] and j.batch(2) == events[:2]
    assert j.changed.is_set()


async def test_a_burst_is_one_write_and_one_fsync_off_the_event_loop(tmp_path, monkeypatch, writer):
    syncs: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # the file's (its directory's too, when it is created)
            syncs.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(journal_module.os, "fsync", fsync)
    j = Journal(tmp_path)
    events = [j.append("lease", f"nic-{i}", {"state": "released"}) for i in range(500)]
    assert j.pending == [] and len(j.queued) == 500  # appending does no I/O
    writer(j)
    await until(lambda: len(j.pending) == 500)
    assert j.pending == events and j.queued == []
    assert len(syncs) == 1 and syncs[0] != threading.main_thread().name
    assert [e.seq for e in Journal(tmp_path).pending] == list(range(1, 501))


async def test_events_appended_while_the_file_cannot_be_written_are_kept_in_order(tmp_path, writer):
    j = writer(Journal(tmp_path))
    j.path.mkdir()  # every write fails (EISDIR) until it goes
    for i in range(10):
        j.append("vm", f"v{i}", {"n": i})
    await asyncio.sleep(0.3)
    assert j.pending == [] and len(j.queued) == 10 and not j.changed.is_set()
    j.path.rmdir()
    await until(lambda: len(j.pending) == 10)
    assert [e.body["n"] for e in j.pending] == list(range(10))
    assert [e.body["n"] for e in Journal(tmp_path).pending] == list(range(10))


async def test_a_write_cut_short_leaves_no_torn_line_behind_the_retry(tmp_path, monkeypatch, writer):
    j = Journal(tmp_path)
    j.append("vm", "v0", {"n": 0})
    await j.flush()
    real_write, failed = os.write, []

    def half_then_enospc(fd: int, data: memoryview) -> int:
        if not failed:
            failed.append(real_write(fd, bytes(data[: len(data) // 2])))
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(journal_module.os, "write", half_then_enospc)
    for i in range(1, 4):
        j.append("vm", f"v{i}", {"n": i})
    writer(j)
    await until(lambda: len(j.pending) == 4)
    assert failed and j.path.read_text().count("\n") == 4
    assert [e.body["n"] for e in Journal(tmp_path).pending] == [0, 1, 2, 3]


async def test_ack_trims_what_the_coordinator_stored_and_survives_a_restart(tmp_path):
    j = Journal(tmp_path)
    for i in range(4):
        j.append("vm", f"v{i}", {"n": i})
    await j.flush()
    await j.ack(2)
    assert [e.seq for e in j.pending] == [3, 4]
    await j.ack(1)  # a late, older acknowledgement changes nothing
    assert (j.acked, [e.seq for e in j.pending]) == (2, [3, 4])
    again = Journal(tmp_path)
    assert (again.acked, again.seq, [e.seq for e in again.pending]) == (2, 4, [3, 4])
    await again.ack(4)
    assert again.pending == [] and again.path.read_text() == ""  # nothing left: the file is compacted
    restarted = Journal(tmp_path)
    assert restarted.pending == []
    assert restarted.append("vm", "x", {}).seq == 5  # numbering goes on


async def test_an_acknowledgement_that_cannot_be_recorded_changes_nothing(tmp_path):
    j = Journal(tmp_path)
    for i in range(3):
        j.append("vm", f"v{i}", {"n": i})
    await j.flush()
    j.acked_path.unlink(missing_ok=True)
    j.acked_path.mkdir()  # in the way of the rename that records it
    with pytest.raises(OSError):
        await j.ack(2)
    assert j.acked == 0 and [e.seq for e in j.pending] == [1, 2, 3]
    j.acked_path.rmdir()
    await j.ack(2)
    assert j.acked == 2 and [e.seq for e in j.pending] == [3]
    assert [e.seq for e in Journal(tmp_path).pending] == [3]


@pytest.mark.parametrize("acks, lines", [(1, 5), (2, 3)])  # the second ack compacts
async def test_the_file_is_compacted_every_so_many_acks(tmp_path, monkeypatch, acks, lines):
    monkeypatch.setattr(journal_module, "COMPACT_AFTER", 2)
    j = Journal(tmp_path)
    for i in range(5):
        j.append("vm", f"v{i}", {"n": i})
    await j.flush()
    for seq in range(1, acks + 1):
        await j.ack(seq)
    assert len(j.path.read_text().splitlines()) == lines
    assert [e.seq for e in Journal(tmp_path).pending] == list(range(acks + 1, 6))


async def test_an_acknowledgement_is_synced_and_so_is_its_rename(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    j = Journal(tmp_path)
    for i in range(2):
        j.append("vm", f"v{i}", {"n": i})
    await j.flush()
    monkeypatch.setattr(journal_module.os, "fsync", fsync)
    await j.ack(1)
    assert [TMP.sub(".tmp", p) for p in synced] == [str(tmp_path / ".acked.tmp"), str(tmp_path)]  # its content,
    synced.clear()  # then the directory: the rename
    await j.ack(2)  # nothing left: the file is rewritten empty, and that rename is synced too
    assert [TMP.sub(".tmp", p) for p in synced] == [str(tmp_path / ".acked.tmp"), str(tmp_path),
                                                    str(tmp_path / "observed.tmp"), str(tmp_path)]


async def test_a_journal_behind_the_coordinator_renumbers_its_events_after_its_sequence(tmp_path):
    j = Journal(tmp_path)  # a state directory restored from an older disk: the coordinator stored up to 50
    for i in range(3):
        j.append("vm", f"v{i}", {"n": i})
    await j.flush()
    j.append("vm", "v3", {"n": 3})  # not written yet
    await j.ack(50)  # the coordinator's answer: none of them stored
    assert [(e.seq, e.body["n"]) for e in j.pending] == [(51, 0), (52, 1), (53, 2)]
    await j.flush()
    assert [(e.seq, e.body["n"]) for e in Journal(tmp_path).pending] == [(51, 0), (52, 1), (53, 2), (54, 3)]
    assert j.append("vm", "v1", {}).seq == 55


async def test_a_report_replaced_while_the_coordinator_is_away_leaves_memory_and_file(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "COMPACT_AFTER", 10)
    j = Journal(tmp_path)  # no acknowledgement for days: each VM's state and each lease changes again and again
    for i in range(300):
        j.append("vm", f"v{i % 3}", {"state": ("Running", "Paused")[i % 2], "n": i})
        j.append("lease", "nic-1", {"state": ("bound", "released")[i % 2], "n": i})
        await j.flush()
    assert [(e.seq, e.kind, e.id, e.body["n"]) for e in j.pending] == [
        (595, "vm", "v0", 297), (597, "vm", "v1", 298), (599, "vm", "v2", 299), (600, "lease", "nic-1", 299)]
    assert len(j.path.read_text().splitlines()) <= 4 + 10  # compacted whenever dropped lines pile up
    assert Journal(tmp_path).pending == j.pending
    assert j.append("vm", "v0", {"state": "Stopped"}).seq == 601  # numbering goes on: the coordinator takes gaps


async def test_reports_that_do_more_than_replace_a_record_are_each_kept(tmp_path):
    j = Journal(tmp_path)
    kept = [j.append(kind, ident, body) for kind, ident, body in [
        ("vm", "v1", {"state": "Running", "migrated": "h2"}),  # a live migration's steps
        ("vm", "v1", {"state": "Running", "arrived": "h2"}),
        ("vm", "v2", {"state": "Stopped", "drift": True, "generation": 3}),
        ("vm", "v2", {"state": "Running", "installed": True, "generation": 4, "boot_order": ["HardDisk"]}),
        ("volume", "vol1", {"storage_uuid": "s1", "state": "Deleted"}),
        ("migration", "vol2", {"id": "m1", "state": "Verified"}),
        ("migration", "vol2", {"id": "m2", "state": "Verified"}),
        ("health", "h1", {"errors": {"vms": "boom"}}),
        ("health", "h1", {"errors": {}}),
        ("vm", "v3", {"state": "Stopped", "prepared": "m1"}),
    ]]
    replaced = j.append("vm", "v2", {"state": "Running"})
    kept.append(j.append("vm", "v2", {"state": "Paused"}))
    kept.append(j.append("vm", "v3", {"state": "Running"}))
    await j.flush()
    assert replaced.seq not in [e.seq for e in j.pending]
    assert j.pending == kept and Journal(tmp_path).pending == kept


async def test_a_replaced_report_stays_on_disk_until_its_replacement_is(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "COMPACT_AFTER", 1)  # every acknowledgement rewrites the file
    j = Journal(tmp_path)
    j.append("lease", "nic-1", {"state": "bound"})
    old = j.append("vm", "v1", {"state": "Running"})
    await j.flush()
    in_flight = j.batch()
    j.append("vm", "v1", {"state": "Paused"})

    def enospc(batch: list[ObservedEvent], size: int) -> int:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(j, "_append", enospc)
        with pytest.raises(OSError):
            await j.flush()  # the replacement is not written
        await j.ack(1)
    assert Journal(tmp_path).pending == [old]  # a crash now still has v1's last written report
    await j.flush()
    assert [(e.seq, e.body["state"]) for e in j.pending] == [(3, "Paused")]
    await j.ack(in_flight[-1].seq)  # the batch sent before, as it was: its sequences still mean those events
    assert [(e.seq, e.body["state"]) for e in Journal(tmp_path).pending] == [(3, "Paused")]


async def test_reports_replaced_while_the_file_cannot_be_written_do_not_pile_up(tmp_path, writer):
    j = writer(Journal(tmp_path))
    j.path.mkdir()  # every write fails (EISDIR) until it goes
    for i in range(1000):
        j.append("vm", "v1", {"n": i})
    await until(lambda: len(j.queued) == 1)
    j.path.rmdir()
    await until(lambda: len(j.pending) == 1)
    assert [(e.seq, e.body["n"]) for e in Journal(tmp_path).pending] == [(1000, 999)]


async def test_past_the_cap_the_oldest_newest_wins_report_goes_first(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(journal_module, "MAX_EVENTS", 4)
    j = Journal(tmp_path)
    j.append("vm", "v1", {"state": "Running", "migrated": "h2"})
    for i in range(4):
        j.append("lease", f"nic-{i}", {"state": "bound"})
    await j.flush()
    assert [e.id for e in j.pending] == ["v1", "nic-1", "nic-2", "nic-3"] and j.capped == 1
    assert "more than 4 events unacknowledged, the oldest dropped (lease nic-0, 1 dropped so far)" in caplog.text
    for i in range(4):  # the leases go, then (none of those left) the oldest of all
        j.append("health", "h1", {"errors": {"vms": str(i)}})
    await j.flush()
    assert [e.body["errors"]["vms"] for e in j.pending] == ["0", "1", "2", "3"] and j.capped == 5
    monkeypatch.setattr(journal_module, "MAX_EVENTS", 5)
    j.append("lease", "nic-9", {"state": "bound"})
    await j.flush()
    monkeypatch.setattr(journal_module, "MAX_EVENTS", 4)  # a journal loaded past the cap keeps to it too
    loaded = Journal(tmp_path)
    assert [e.body["errors"]["vms"] for e in loaded.pending] == ["0", "1", "2", "3"]
    assert loaded.append("lease", "nic-9", {"state": "released"}).seq == 11  # the dropped one's is not reused


async def test_a_renumbered_journal_goes_on_replacing_its_reports(tmp_path):
    j = Journal(tmp_path)
    for i in range(3):
        j.append("vm", "v1", {"n": i})
    await j.flush()
    await j.ack(50)  # its state directory is older than what the coordinator stored
    assert [(e.seq, e.body["n"]) for e in j.pending] == [(51, 2)]
    j.append("vm", "v1", {"n": 3})
    await j.flush()
    assert [(e.seq, e.body["n"]) for e in Journal(tmp_path).pending] == [(52, 3)]
