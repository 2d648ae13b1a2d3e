"""agentkit.journal: every event is on disk (fsync'd, whole lines) before it counts; acknowledged ones go."""

from __future__ import annotations

import os

import pytest

from agentkit import journal as journal_module
from agentkit.journal import Journal


def test_journal_survives_restart_and_torn_line(tmp_path):
    j = Journal(tmp_path)
    for i in range(3):
        j.append("vm", "x", {"n": i})
    j.ack(1)
    with open(j.path, "a") as f:
        f.write('{"seq": 4, "kind": "vm", "id"')   # a crash mid-write
    j2 = Journal(tmp_path)
    assert [e.seq for e in j2.pending] == [2, 3]
    assert j2.append("vm", "x", {}).seq == 4
    assert [e.seq for e in Journal(tmp_path).pending] == [2, 3, 4]


def test_the_torn_tail_is_dropped_from_the_file_at_once(tmp_path):
    j = Journal(tmp_path)
    j.append("vm", "x", {"n": 1})
    with open(j.path, "a") as f:
        f.write('{"seq": 2, "ki')
    Journal(tmp_path)
    assert j.path.read_text().endswith("}\n") and len(j.path.read_text().splitlines()) == 1


def test_each_event_is_a_whole_line_on_disk_when_fsync_returns(tmp_path, monkeypatch):
    synced: list[list[str]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append((tmp_path / "observed.jsonl").read_text().splitlines(keepends=True))

    monkeypatch.setattr(journal_module.os, "fsync", fsync)
    j = Journal(tmp_path)
    events = [j.append("vm", f"vm-{i}", {"state": "Running"}) for i in range(3)]
    assert [[line.endswith("\n") for line in lines] for lines in synced] == [[True], [True, True], [True] * 3]
    assert [e.seq for e in events] == [1, 2, 3] and j.batch(2) == events[:2]
    assert j.changed.is_set()


def test_ack_trims_what_the_coordinator_stored_and_survives_a_restart(tmp_path):
    j = Journal(tmp_path)
    for i in range(4):
        j.append("vm", "x", {"n": i})
    j.ack(2)
    assert [e.seq for e in j.pending] == [3, 4]
    j.ack(1)  # a late, older acknowledgement changes nothing
    assert (j.acked, [e.seq for e in j.pending]) == (2, [3, 4])
    again = Journal(tmp_path)
    assert (again.acked, again.seq, [e.seq for e in again.pending]) == (2, 4, [3, 4])
    again.ack(4)
    assert again.pending == [] and again.path.read_text() == ""  # nothing left: the file is compacted
    restarted = Journal(tmp_path)
    assert restarted.pending == []
    assert restarted.append("vm", "x", {}).seq == 5  # numbering goes on


@pytest.mark.parametrize("acks, lines", [(1, 5), (2, 3)])  # the second ack compacts
def test_the_file_is_compacted_every_so_many_acks(tmp_path, monkeypatch, acks, lines):
    monkeypatch.setattr(journal_module, "COMPACT_AFTER", 2)
    j = Journal(tmp_path)
    for i in range(5):
        j.append("vm", "x", {"n": i})
    for seq in range(1, acks + 1):
        j.ack(seq)
    assert len(j.path.read_text().splitlines()) == lines
    assert [e.seq for e in Journal(tmp_path).pending] == list(range(acks + 1, 6))
