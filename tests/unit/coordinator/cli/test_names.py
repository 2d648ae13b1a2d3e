"""uuid-or-name arguments: exact uuid first, then exact name; unknown and ambiguous names are one line."""

from __future__ import annotations

import pytest

from coordinator.cli.declare import Resource
from coordinator.cli.errors import CliError
from coordinator.cli.names import Found, pick

VM = Resource("VM", {"/v1/vms": "vms"}, name_field="spec.name")
ROWS = [Found({"uuid": uuid, "spec": {"name": name}}, "/v1/vms")
        for uuid, name in (("u1", "tiny"), ("u2", "dup"), ("u3", "dup"), ("u4", "u1"))]


def test_a_uuid_and_a_unique_name_find_the_object_with_its_row():
    assert pick(VM, ROWS, "u2", "argument VM") == "u2"
    found = pick(VM, ROWS, "tiny", "argument VM")
    assert (found, found.row["spec"]["name"], found.collection) == ("u1", "tiny", "/v1/vms")


def test_an_exact_uuid_wins_over_a_name():
    assert pick(VM, ROWS, "u1", "argument VM") == "u1"


def test_an_ambiguous_name_lists_the_matches_in_one_line():
    with pytest.raises(CliError) as e:
        pick(VM, ROWS, "dup", "argument VM")
    assert str(e.value) == "VM name dup is ambiguous: u2 dup, u3 dup; give a uuid (argument VM)"


def test_an_unknown_name_is_one_line():
    with pytest.raises(CliError) as e:
        pick(VM, ROWS, "nope", "argument --l3, field l3_network_uuids")
    assert str(e.value) == "VM nope does not exist (argument --l3, field l3_network_uuids)"
