"""Placement: the host asked for by uuid or name, else the connected KVM host with the fewest VMs."""

from __future__ import annotations

import pytest

from agentkit.errors import Invalid
from coordinator.domain.errors import NoHost
from coordinator.domain.hosts import Host
from coordinator.domain.placement import least_loaded, named


def host(uuid: str, kind: str = "kvm") -> Host:
    return Host(uuid=uuid, name=f"name-{uuid}", address="198.18.0.2", kind=kind, token_sha256="", created=0.0)


HOSTS = [host("a"), host("b"), host("c"), host("m", kind="ceph")]


def test_the_least_loaded_connected_kvm_host_wins_ties_by_uuid():
    assert least_loaded(HOSTS, {"a", "b", "c", "m"}, {"a": 3, "b": 1, "c": 1, "m": 0}) == "b"
    assert least_loaded(HOSTS, {"a", "c"}, {"a": 3, "b": 0, "c": 5}) == "a"
    assert least_loaded(HOSTS, {"c"}, {}) == "c"


def test_no_connected_kvm_host_is_a_conflict_on_the_placement_field():
    with pytest.raises(NoHost) as e:
        least_loaded(HOSTS, {"m", "gone"}, {})
    assert (e.value.status, e.value.code, e.value.field) == (409, "no_host", "host_uuid")


def test_an_explicit_host_is_found_by_uuid_or_name_and_must_be_kvm():
    assert named(HOSTS, "b") == "b"
    assert named(HOSTS, "name-c") == "c"
    for ref in ("m", "name-m", "nope"):
        with pytest.raises(Invalid) as e:
            named(HOSTS, ref)
        assert e.value.field == "host_uuid" and str(e.value) == f"no KVM host {ref}"
