"""The observed-event journal on a real file system: group commits, failing writes and acknowledgements.

A path that cannot be written is made by putting a directory where the journal wants a file (EISDIR,
what EMFILE or ENOSPC look like to the journal: an OSError from the write); a write cut short is made by
a file system stand-in that fails once halfway. The link's side (uploads that back off): test_link.py.
"""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from agentkit import journal as journal_mod
from agentkit.journal import Journal


async def until(cond, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def writer():
    tasks: list[asyncio.Task] = []

    def start(j: Journal) -> Journal:
        tasks.append(asyncio.create_task(j.run()))
        return j

    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_burst_is_one_write_and_one_fsync_off_the_event_loop(tmp_path, monkeypatch, writer):
    syncs: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(journal_mod.os, "fsync", lambda fd: (syncs.append(threading.current_thread().name),
                                                             real_fsync(fd)))
    j = Journal(tmp_path)
    events = [j.append("lease", f"nic-{i % 7}", {"state": "released"}) for i in range(500)]
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
        j.append("vm", "v1", {"n": i})
    await asyncio.sleep(0.3)
    assert j.pending == [] and len(j.queued) == 10 and not j.changed.is_set()
    j.path.rmdir()
    await until(lambda: len(j.pending) == 10)
    assert [e.body["n"] for e in j.pending] == list(range(10))
    assert [e.body["n"] for e in Journal(tmp_path).pending] == list(range(10))


async def test_a_write_cut_short_leaves_no_torn_line_behind_the_retry(tmp_path, monkeypatch, writer):
    j = Journal(tmp_path)
    j.append("vm", "v1", {"n": 0})
    await j.flush()
    real_write, failed = os.write, []

    def half_then_enospc(fd: int, data) -> int:
        if not failed:
            failed.append(real_write(fd, bytes(data[: len(data) // 2])))
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(journal_mod.os, "write", half_then_enospc)
    for i in range(1, 4):
        j.append("vm", "v1", {"n": i})
    writer(j)
    await until(lambda: len(j.pending) == 4)
    assert failed and j.path.read_text().count("\n") == 4
    assert [e.body["n"] for e in Journal(tmp_path).pending] == [0, 1, 2, 3]


async def test_an_acknowledgement_that_cannot_be_recorded_changes_nothing(tmp_path):
    j = Journal(tmp_path)
    for i in range(3):
        j.append("vm", "v1", {"n": i})
    await j.flush()
    tmp = j.acked_path.with_suffix(".tmp")
    tmp.mkdir()
    with pytest.raises(OSError):
        await j.ack(2)
    assert j.acked == 0 and [e.seq for e in j.pending] == [1, 2, 3]
    tmp.rmdir()
    await j.ack(2)
    assert j.acked == 2 and [e.seq for e in j.pending] == [3]
    assert [e.seq for e in Journal(tmp_path).pending] == [3]
    await j.ack(3)
    assert j.pending == [] and j.path.read_text() == ""  # nothing pending: compacted to nothing


async def test_survives_restart_and_a_torn_line(tmp_path):
    j = Journal(tmp_path)
    for i in range(3):
        j.append("vm", "x", {"n": i})
    await j.flush()
    await j.ack(1)
    with open(j.path, "a") as f:
        f.write('{"seq": 4, "kind": "vm", "id"')  # a crash mid-write
    j2 = Journal(tmp_path)
    assert [e.seq for e in j2.pending] == [2, 3]
    assert j2.append("vm", "x", {}).seq == 4
    await j2.flush()
    assert [e.seq for e in Journal(tmp_path).pending] == [2, 3, 4]
