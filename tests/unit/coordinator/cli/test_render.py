"""What `hs` prints: tables for lists, dotted `key: value` lines for one object, JSON on request."""

from __future__ import annotations

import json

from coordinator.cli.render import output

VM = {"uuid": "u1", "host_uuid": "h1", "spec": {"name": "tiny", "nics": [{"ip": "10.0.0.5", "default": True}],
                                               "boot_order": ["CdRom", "HardDisk"], "kernel": None, "volumes": []},
      "observed": None, "leases": {}, "pending": "state Running"}


def test_one_object_prints_as_dotted_keys():
    assert output(VM, (), as_json=False).splitlines() == [
        "uuid: u1", "host_uuid: h1", "spec.name: tiny", "spec.nics.0.ip: 10.0.0.5", "spec.nics.0.default: True",
        "spec.boot_order: CdRom,HardDisk", "spec.kernel: -", "spec.volumes: -", "observed: -", "leases: -",
        "pending: state Running"]


def test_a_list_prints_as_a_table_of_the_declared_columns():
    table = output({"vms": [VM, {**VM, "uuid": "u2", "spec": {"name": "longer-name"}}]},
                   ("uuid", "spec.name", "spec.nics.0.ip", "observed.state"), as_json=False)
    assert table.splitlines() == [
        "uuid  spec.name    spec.nics.0.ip  observed.state",
        "u1    tiny         10.0.0.5        -",
        "u2    longer-name  -               -"]


def test_a_list_without_columns_shows_every_field_and_an_empty_one_its_header():
    assert output({"configs": [{"name": "a", "allowed": ["x", "y"], "extra": {"k": 1}}]}, (), False).splitlines() \
        == ["name  allowed  extra", 'a     x,y      {"k":1}']
    assert output({"vms": []}, ("uuid", "spec.name"), False) == "uuid  spec.name"


def test_nothing_prints_ok_lines_print_as_they_are_and_json_is_the_answer():
    assert output(None, (), False) == "ok"
    assert output("h1: deployed 1.0\nh2: unchanged", (), False) == "h1: deployed 1.0\nh2: unchanged"
    assert json.loads(output(VM, ("uuid",), True)) == VM


def test_times_print_in_utc_and_stay_unix_seconds_in_json():
    host = {"uuid": "h1", "last_heartbeat": 1796578512.8, "health": {"status": "ok", "at": 1796578512},
            "token_renew_at": None, "facts": {"cpus": 2}}
    assert output(host, (), False).splitlines() == [
        "uuid: h1", "last_heartbeat: 2026-12-06 17:35:12 UTC", "health.status: ok",
        "health.at: 2026-12-06 17:35:12 UTC", "token_renew_at: -", "facts.cpus: 2"]
    assert output({"hosts": [host]}, ("uuid", "health.at"), False).splitlines()[1] == "h1    2026-12-06 17:35:12 UTC"
    assert json.loads(output(host, (), True)) == host


def test_a_time_past_any_calendar_prints_as_the_number_it_is():
    """What an agent reports carries its own clock's times: one absurd (a broken clock, a hostile host) must
    not stop `hs` from showing the rest."""
    vm = {"uuid": "v1", "observed": {"at": 1e18, "state": "Running"}, "created_at": -1e12, "updated_at": 1e300}
    assert output(vm, (), False).splitlines() == [
        "uuid: v1", "observed.at: 1e+18", "observed.state: Running", "created_at: -1000000000000.0",
        "updated_at: 1e+300"]


def test_byte_counts_print_in_binary_units_and_stay_bytes_in_json():
    vol = {"name": "data1", "size": 50331648, "observed": {"used": 204800}, "seq": 3, "percent": 100.0,
           "capacity": {"total": 270552530944, "available": 1536, "used": 0}, "memory_mb": 2048}
    assert output(vol, (), False).splitlines() == [
        "name: data1", "size: 48 MiB", "observed.used: 200 KiB", "seq: 3", "percent: 100.0",
        "capacity.total: 252 GiB", "capacity.available: 1.5 KiB", "capacity.used: 0 B", "memory_mb: 2048"]
    assert output({"volumes": [vol]}, ("name", "size"), False).splitlines()[1] == "data1  48 MiB"
    assert json.loads(output(vol, (), True)) == vol


def test_what_a_host_or_agent_said_prints_with_control_characters_escaped():
    """A deploy log entry stored before the deployer escaped it, or a VM's error, cannot drive the terminal."""
    log = {"entries": [{"task": "probe", "message": "\x1b[2J\x1b]0;owned\x07done"}]}
    assert output(log, ("task", "message"), False).splitlines()[1] == "probe  \\x1b[2J\\x1b]0;owned\\x07done"
    assert output({"error": "line one\nline two\r"}, (), False) == "error: line one\\nline two\\r"
