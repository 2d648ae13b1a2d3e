"""What each API flavour serves for a caller, and the desired-state index (no network)."""

from __future__ import annotations

import json

import pytest
import yaml
from aiohttp import web

from agentkit.model import EipBinding, L3Spec, NicSpec, Service, VmSpec
from flatnet.metadata.flavours import cloudstack, ec2, openstack, tree
from flatnet.metadata.instance import Caller
from flatnet.metadata.settings import MetadataSettings
from flatnet.metadata.store import Store

L3 = L3Spec(uuid="l3a", name="flat", l2_uuid="l2a", cidr="198.18.5.0/24", gateway="198.18.5.1",
            dhcp_address="198.18.5.2", domain="corp.example", services=[Service.DHCP, Service.USERDATA])
L3B = L3Spec(uuid="l3b", name="back", l2_uuid="l2a", cidr="198.18.6.0/24", services=[Service.USERDATA])
NIC = NicSpec(uuid="nic-a", l3_uuid="l3a", mac="52:54:00:00:00:0a", ip="198.18.5.10", default=True,
              eip=EipBinding(uuid="eip1", vip="203.0.113.7", public_l3_uuid="pub"))
NIC_B = NicSpec(uuid="nic-b", l3_uuid="l3b", mac="52:54:00:00:00:0b", ip="198.18.6.10", device_index=1)
KEYS = {"bob": "ssh-ed25519 AAAAbob bob@x", "alice": "ssh-rsa AAAAalice alice@x"}


def caller(nic: NicSpec = NIC, **vm: object) -> Caller:
    spec = VmSpec(uuid="vm-1", name="DB #1", nics=[NIC, NIC_B], image_uuid="img-1", **vm)
    return Caller(spec, nic, {"l3a": L3, "l3b": L3B}[nic.l3_uuid], {"l3a": L3, "l3b": L3B}, MetadataSettings())


def text(root: tree.Node, path: str) -> str:
    return tree.serve(root, path).text


def test_ec2_listings_and_leaves():
    root = ec2.root(caller(ssh_keys=KEYS, userdata="#!/bin/sh\necho hi\n"), "2021-03-23")
    assert text(root, "") == "dynamic/\nmeta-data/\nuser-data"
    listing = text(root, "meta-data/").splitlines()
    assert {"instance-id", "local-ipv4", "mac", "placement/", "public-keys/", "network/", "public-ipv4"} <= set(listing)
    assert text(root, "meta-data/instance-id") == "vm-1"
    assert text(root, "meta-data/hostname") == "db-1.corp.example"
    assert text(root, "meta-data/public-ipv4") == "203.0.113.7"
    assert text(root, "meta-data/public-keys/") == "0=alice\n1=bob"
    assert text(root, "meta-data/public-keys/1/") == "openssh-key"
    assert text(root, "meta-data/public-keys/1/openssh-key") == KEYS["bob"]
    nic_b = "meta-data/network/interfaces/macs/52:54:00:00:00:0b/"
    assert text(root, nic_b + "device-number") == "1"
    assert text(root, nic_b + "subnet-ipv4-cidr-block") == "198.18.6.0/24"
    assert text(root, nic_b + "local-ipv4s") == "198.18.6.10"
    assert json.loads(text(root, "dynamic/instance-identity/document"))["instanceId"] == "vm-1"
    assert tree.serve(root, "user-data").body == b"#!/bin/sh\necho hi\n"


def test_ec2_2009_has_no_network_and_missing_things_are_404():
    root = ec2.root(caller(), "2009-04-04")
    assert "network/" not in text(root, "meta-data/").splitlines()
    for path in ("user-data", "meta-data/public-keys/", "meta-data/nope", "meta-data/instance-id/deeper"):
        with pytest.raises(web.HTTPNotFound):
            tree.serve(root, path)


def test_ssh_keys_without_userdata_give_a_cloud_config_that_installs_them():
    ud = caller(ssh_keys=KEYS).userdata.decode()
    assert ud.startswith("#cloud-config\n")
    assert yaml.safe_load(ud) == {"ssh_authorized_keys": [KEYS["alice"], KEYS["bob"]]}
    assert caller().userdata is None


def test_openstack_documents():
    files = openstack.files(caller(ssh_keys=KEYS))
    md = json.loads(text(files, "meta_data.json"))
    assert (md["uuid"], md["hostname"], md["public_keys"]) == ("vm-1", "db-1.corp.example", dict(sorted(KEYS.items())))
    net = json.loads(text(files, "network_data.json"))
    assert [link["ethernet_mac_address"] for link in net["links"]] == [NIC.mac, NIC_B.mac]
    assert net["networks"][0]["type"] == "ipv4_dhcp"
    assert net["networks"][1] == {"id": "network1", "link": NIC_B.tap, "network_id": "l3b", "type": "ipv4",
                                  "ip_address": "198.18.6.10", "netmask": "255.255.255.0", "routes": []}
    assert text(files, "user_data").startswith("#cloud-config")


def test_cloudstack_is_flat_and_describes_the_asking_nic():
    root = cloudstack.root(caller(NIC_B, ssh_keys=KEYS))
    assert text(root, "meta-data/").splitlines() == [
        "availability-zone", "instance-id", "local-hostname", "local-ipv4", "public-keys", "service-offering", "vm-id"]
    assert text(root, "meta-data/local-ipv4") == "198.18.6.10"
    assert text(root, "meta-data/public-keys") == f"{KEYS['alice']}\n{KEYS['bob']}"


def test_store_never_serves_an_address_claimed_twice():
    store = Store(MetadataSettings())
    twin = VmSpec(uuid="vm-2", name="twin", nics=[NIC.model_copy(update={"uuid": "nic-z", "mac": "52:54:00:00:00:0c"})])
    store.update({"l3a": L3, "l3b": L3B}, {"vm-1": caller().vm, "vm-2": twin})
    assert store.caller("l3a", NIC.ip) is None
    assert store.caller("l3b", NIC_B.ip).vm.uuid == "vm-1"
    assert store.caller("l3a", NIC_B.ip) is None
