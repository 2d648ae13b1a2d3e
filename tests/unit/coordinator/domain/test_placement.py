"""Placement: the host asked for by uuid or name, else the connected KVM hosts fewest VMs first, the first where
the VM's memory fits; a host's memory as placement counts it."""

from __future__ import annotations

import pytest

from agentkit.errors import Invalid
from agentkit.model import HostFacts
from coordinator.domain.errors import InsufficientCapacity, NoHost
from coordinator.domain.hostmemory import HostMemory, Rules
from coordinator.domain.hosts import Host
from coordinator.domain.placement import by_load, named, nowhere


def host(uuid: str, kind: str = "kvm") -> Host:
    return Host(uuid=uuid, name=f"name-{uuid}", address="198.18.0.2", kind=kind, token_sha256="", created=0.0)


HOSTS = [host("a"), host("b"), host("c"), host("m", kind="ceph")]


def memory(uuid: str, vms: int = 0, total: int | None = 4096, allocated: int = 0, ratio: float = 1.0) -> HostMemory:
    facts = HostFacts(memory_mb=total) if total is not None else None
    return HostMemory.of(host(uuid).model_copy(update={"facts": facts}), Rules(512, ratio), allocated, vms)


def test_connected_kvm_hosts_go_fewest_vms_first_ties_by_uuid():
    assert [h.uuid for h in by_load(HOSTS, {"a", "b", "c", "m"}, {"a": 3, "b": 1, "c": 1, "m": 0})] == ["b", "c", "a"]
    assert [h.uuid for h in by_load(HOSTS, {"a", "c"}, {"a": 3, "c": 5})] == ["a", "c"]
    assert [h.uuid for h in by_load(HOSTS, {"c"}, {})] == ["c"]


def test_no_connected_kvm_host_is_a_conflict_on_the_placement_field():
    with pytest.raises(NoHost) as e:
        by_load(HOSTS, {"m", "gone"}, {})
    assert (e.value.status, e.value.code, e.value.field) == (409, "no_host", "host_uuid")


def test_memory_that_fits_nowhere_is_a_conflict_naming_the_host_with_the_most():
    e = nowhere([memory("a", allocated=3000), memory("b", allocated=1000), memory("c", allocated=3584)], 3000)
    assert (e.status, e.code, e.field) == (409, "insufficient_capacity", "memory_mb")
    assert str(e) == ("no connected KVM host has 3000 MiB of memory available for the VM; the most is on host "
                      "name-b: 2584 MiB available of 3584 MiB (4096 MiB less 512 reserved, x over-provisioning 1; "
                      "1000 MiB given to VMs)")


def test_capacity_is_what_is_left_after_the_reservation_over_provisioned():
    m = memory("a", total=4096, allocated=6000, ratio=2.0)
    assert (m.capacity_mb, m.available_mb, m.fits(1168), m.fits(1169)) == (7168, 1168, True, False)
    assert memory("a", total=256).capacity_mb == 0  # less than the reservation: nothing for VMs
    unknown = memory("a", total=None)  # its agent never reported: nothing is known against it
    assert (unknown.capacity_mb, unknown.available_mb, unknown.fits(1 << 30)) == (None, None, True)
    unknown.admit(1 << 30)
    assert m.taking(1000).model_dump() == {**m.model_dump(), "allocated_mb": 7000, "available_mb": 168, "vms": 1}
    with pytest.raises(InsufficientCapacity) as e:
        m.admit(2000)
    assert str(e.value).startswith("host name-a cannot take 2000 MiB of memory: 1168 MiB available of 7168 MiB")


def test_an_explicit_host_is_found_by_uuid_or_name_and_must_be_kvm():
    assert named(HOSTS, "b").uuid == "b"
    assert named(HOSTS, "name-c").uuid == "c"
    for ref in ("m", "name-m", "nope"):
        with pytest.raises(Invalid) as e:
            named(HOSTS, ref)
        assert e.value.field == "host_uuid" and str(e.value) == f"no KVM host {ref}"
