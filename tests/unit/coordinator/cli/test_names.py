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


def test_an_object_named_by_several_fields_is_found_by_each_and_errors_say_what_names_it():
    nic = Resource("NIC", {}, name_field="ip", also_named=("mac",), name_word="address")
    rows = [Found({"uuid": uuid, "ip": ip, "mac": mac}, "/v1/vms")
            for uuid, ip, mac in (("n1", "10.0.0.5", "fa:16:3e:00:00:01"), ("n2", "10.0.0.5", "fa:16:3e:00:00:02"))]
    assert (pick(nic, rows, "fa:16:3e:00:00:02", "argument --nic"), pick(nic, rows, "n1", "argument --nic")) == (
        "n2", "n1")
    with pytest.raises(CliError) as e:
        pick(nic, rows, "10.0.0.5", "argument --nic")
    assert str(e.value) == "NIC address 10.0.0.5 is ambiguous: n1 10.0.0.5, n2 10.0.0.5; give a uuid (argument --nic)"
