"""The rules of a host's view: which L3 networks a VM gives its host, and the lines' encoding."""

from __future__ import annotations

import json

from coordinator.domain.hostview import changes, line, progress, snapshot, vm_l3s


def test_a_vm_gives_its_host_the_l3s_of_its_nics_and_of_their_eips():
    vm = {"uuid": "v", "nics": [{"l3_uuid": "a"}, {"l3_uuid": "b", "eip": {"public_l3_uuid": "pub", "vip": "x"}}]}
    assert vm_l3s(vm) == {"a", "b", "pub"}


def test_a_vm_without_nics_or_a_deleted_one_gives_none():
    assert vm_l3s({"uuid": "v", "nics": []}) == frozenset()
    assert vm_l3s(None) == frozenset()
    assert vm_l3s({"nics": [7, {"l3_uuid": 3}, {"eip": None}]}) == frozenset()


def test_lines_are_one_compact_json_document_each():
    for doc in (snapshot(3, {"l3/a": {"uuid": "a"}}), changes(4, {"vm/v": {}}, ["dns/a/n"]), progress(5)):
        data = line(doc)
        assert data.endswith(b"\n") and data.count(b"\n") == 1 and b": " not in data
        assert json.loads(data) == doc


def test_a_snapshot_names_its_timeline_once_the_data_was_restored():
    assert "timeline" not in snapshot(3, {})  # never restored: the line agents always read
    assert snapshot(3, {}, "20270102T093000.512345Z-9f1c2a7b")["timeline"] == "20270102T093000.512345Z-9f1c2a7b"
