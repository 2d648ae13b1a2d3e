"""agentkit.model: stream values validate by their key's kind; invalid ones are refused, never half-read."""

from __future__ import annotations

import pytest

from agentkit import model
from agentkit.model import L2Spec, L3Spec, NicSpec, RbdDisk, VmSpec, VolumeSpec

L2 = {"uuid": "0123456789ab", "name": "phys", "physical_interface": "eth1"}
NIC = {"uuid": "abcdef0123", "l3_uuid": "l3", "mac": "52:54:00:00:00:01", "ip": "198.18.0.10"}


@pytest.mark.parametrize("key, value, kind", [
    (model.stream_key_l2("u"), L2, L2Spec),
    (model.stream_key_l3("u"), {"uuid": "u", "name": "n", "l2_uuid": "l2", "cidr": "198.18.0.0/24"}, L3Spec),
    (model.stream_key_vm("u"), {"uuid": "u", "name": "tiny"}, VmSpec),
    (model.stream_key_dns("l3", "nic"), {"l3_uuid": "l3", "name": "tiny", "ip": "198.18.0.10"}, model.DnsRecord),
    (model.stream_key_ceph_secret("f"), {"uuid": "s", "user": "admin", "key": "k", "fsid": "f"},
     model.CephSecretSpec),
])
def test_each_kind_parses_into_its_model(key, value, kind):
    assert isinstance(model.parse_stream_item(key, value)[0], kind)


def test_config_values_stay_plain_json():
    assert model.parse_stream_item(model.stream_key_config("kvm.vm.cacheMode"), "writeback") == ("writeback", [])


def test_fields_of_a_newer_coordinator_are_read_past_and_named():
    """An agent not upgraded yet keeps the VM (it took such a spec for an invalid one: absent, its domain gone)."""
    disk = {"uuid": "r", "role": "root", "disk": {"kind": "file", "path": "v/r.qcow2"}}
    move = {"id": "m1", "host": "h2", "uri": "qemu+tls://h2/system", "address": "198.18.0.2"}
    newer = {"uuid": "u", "name": "n", "volumes": [{**disk, "disk": {**disk["disk"], "aio": "io_uring"}}],
             "migrate_to": {**move, "prepared_at": 5}, "numa": {"nodes": 2}}
    spec, left_out = model.parse_stream_item("vm/u", newer)
    assert spec == VmSpec(uuid="u", name="n", volumes=[disk], migrate_to=move)
    assert sorted(left_out) == ["migrate_to.prepared_at", "numa", "volumes.0.disk.file.aio"]
    assert newer["numa"] == {"nodes": 2}  # the stream's own value is left as it came
    assert model.parse_stream_item("l2/u", {**L2, "colour": "blue"}) == (L2Spec(**L2), ["colour"])


@pytest.mark.parametrize("key, value", [
    ("l2/u", {**L2, "colour": "blue", "vlan": 4095}),  # a fault besides the new field: the value's
    ("l2/u", {**L2, "vlan": 4095}),
    ("vm/u", {"uuid": "u", "name": "n", "nics": [NIC, {**NIC, "uuid": "other"}]}),  # no default NIC
    ("vm/u", {"uuid": "u", "name": "n", "nics": [{**NIC, "mac": "52:54:00:00:00:0G", "default": True}]}),
    ("vm/u", {"uuid": "u", "name": "n", "state": "Crashed"}),
])
def test_invalid_values_are_refused(key, value):
    with pytest.raises(ValueError):
        model.parse_stream_item(key, value)


def test_names_every_host_derives_alike():
    assert L2Spec(**L2).bridge == "hsbr01234567" and L2Spec(**L2).uplink == "eth1"
    assert L2Spec(**L2, vlan=42).uplink == "hsv012345.42"
    assert NicSpec(**NIC).tap == "hstabcdef01"
    assert len(L2Spec(**L2).bridge) <= 15 and len(NicSpec(**NIC).tap) <= 15  # Linux interface names
    assert str(L3Spec(uuid="u", name="n", l2_uuid="l2", cidr="198.18.4.0/22").network.netmask) == "255.255.252.0"


def test_a_volume_is_a_file_or_an_rbd_image_by_its_kind():
    rbd = VolumeSpec.model_validate({"uuid": "v", "disk": {"kind": "rbd", "pool": "p", "image": "i",
                                                             "monitors": ["198.18.0.2:6789"], "secret_uuid": "s"}})
    assert isinstance(rbd.disk, RbdDisk) and rbd.disk.user == "admin"
    with pytest.raises(ValueError):
        VolumeSpec.model_validate({"uuid": "v", "disk": {"kind": "nfs", "path": "/x"}})


def test_one_nic_must_be_the_default():
    vm = VmSpec(uuid="u", name="n", nics=[NicSpec(**NIC, default=True), NicSpec(**{**NIC, "uuid": "b"})])
    assert [n.default for n in vm.nics] == [True, False]
    assert VmSpec(uuid="u", name="n").nics == []


def test_observed_events_round_trip_as_json():
    ev = model.ObservedEvent(seq=3, kind="vm", id="v1", body={"state": "Running"}, at=1.5)
    assert model.ObservedEvent.model_validate_json(ev.model_dump_json()) == ev
    with pytest.raises(ValueError):
        model.ObservedEvent(seq=0, kind="vm", id="v1", body={}, at=1.5)
