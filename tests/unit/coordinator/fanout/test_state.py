"""The watch cache's state: items by scope, the L3s each host has, and a revision split by audience."""

from __future__ import annotations

from coordinator.etcd.store import Change, Entry
from coordinator.fanout.state import DesiredState


def vm(uuid: str, *l3s: str) -> dict:
    return {"uuid": uuid, "nics": [{"uuid": f"n-{uuid}-{l3}", "l3_uuid": l3} for l3 in l3s]}


def dns(l3: str, nic: str) -> tuple[str, dict]:
    return f"/hs/d/all/dns/{l3}/{nic}", {"l3_uuid": l3, "name": nic, "ip": "198.18.0.9"}


def test_items_are_kept_by_scope_and_bookkeeping_keys_are_ignored():
    s = DesiredState()
    d = s.apply([Change("/hs/d/all/l3/a", {"uuid": "a"}, 5), Change("/hs/d/host/h1/vm/v1", vm("v1", "a"), 5),
                 Change(*dns("a", "n1"), 5), Change("/hs/ipam/a/198.18.0.9", {}, 5)], 5)
    assert s.rev == 5
    assert s.common == {"l3/a": {"uuid": "a"}}
    assert s.hosts == {"h1": {"vm/v1": vm("v1", "a")}}
    assert s.l3s == {"a": {"dns/a/n1": dns("a", "n1")[1]}}
    assert list(d.common.puts) == ["l3/a"] and list(d.hosts) == ["h1"] and list(d.l3s) == ["a"]
    assert s.view("h1") == {"l3/a": {"uuid": "a"}, "vm/v1": vm("v1", "a"), "dns/a/n1": dns("a", "n1")[1]}
    assert s.view("h2") == {"l3/a": {"uuid": "a"}}


def test_a_host_has_an_l3_while_any_of_its_vms_does():
    s = DesiredState()
    s.apply([Change("/hs/d/host/h1/vm/v1", vm("v1", "a", "b"), 2), Change("/hs/d/host/h1/vm/v2", vm("v2", "a"), 2),
             Change("/hs/d/host/h2/vm/v3", vm("v3", "a"), 2)], 2)
    assert set(s.host_l3s("h1")) == {"a", "b"} and s.members == {"a": {"h1", "h2"}, "b": {"h1"}}
    s.apply([Change("/hs/d/host/h1/vm/v1", None, 3)], 3)
    assert set(s.host_l3s("h1")) == {"a"} and s.members == {"a": {"h1", "h2"}}
    s.apply([Change("/hs/d/host/h1/vm/v2", None, 4), Change("/hs/d/host/h2/vm/v3", vm("v3", "c"), 4)], 4)
    assert s.members == {"c": {"h2"}} and s.hosts == {"h2": {"vm/v3": vm("v3", "c")}}
    assert not s.host_l3s("h1") and s.vm_l3s("h1") == {}


def test_a_vm_landing_with_a_new_l3_brings_its_items_and_leaving_takes_them():
    s = DesiredState()
    s.apply([Change(*dns("a", "n1"), 2), Change(*dns("a", "n2"), 2), Change(*dns("b", "n3"), 2)], 2)
    d = s.apply([Change("/hs/d/host/h1/vm/v1", vm("v1", "a"), 3), Change(*dns("a", "n4"), 3)], 3)
    assert d.gained == {"h1": {"a"}}
    assert set(d.hosts["h1"].puts) == {"vm/v1", "dns/a/n1", "dns/a/n2", "dns/a/n4"}
    d = s.apply([Change("/hs/d/host/h1/vm/v1", None, 4), Change(dns("a", "n2")[0], None, 4)], 4)
    assert set(d.hosts["h1"].deletes) == {"vm/v1", "dns/a/n1", "dns/a/n2", "dns/a/n4"} and not d.hosts["h1"].puts


def test_a_listing_becomes_the_changes_that_reach_it():
    s = DesiredState()
    s.apply([Change("/hs/d/all/l3/a", {"v": 1}, 2), Change("/hs/d/all/l3/b", {"v": 1}, 2),
             Change("/hs/d/host/h1/vm/v1", vm("v1", "a"), 2), Change(*dns("a", "n1"), 2)], 2)
    listed = [Entry("/hs/d/all/l3/a", {"v": 2}, 9, 1), Entry("/hs/d/host/h1/vm/v1", vm("v1", "a"), 2, 2),
              Entry("/hs/d/host/h2/vm/v2", vm("v2"), 9, 9)]
    diff = s.diff(listed, 9)
    assert {(c.key, str(c.value)) for c in diff} == {
        ("/hs/d/all/l3/a", "{'v': 2}"), ("/hs/d/host/h2/vm/v2", str(vm("v2"))),
        ("/hs/d/all/l3/b", "None"), ("/hs/d/all/dns/a/n1", "None")}
    assert {c.revision for c in diff} == {9}
