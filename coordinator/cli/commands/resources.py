"""The objects that arguments of several groups refer to by uuid or name (Ceph's own are in ceph.py), and
the size argument they share."""

from __future__ import annotations

import argparse

from coordinator.cli.declare import Resource

SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size(text: str) -> int:
    """Bytes from `10G`, `512M`, `4096` (binary units)."""
    num, unit = text.rstrip("iBb").upper()[:-1], text.rstrip("iBb").upper()[-1:]
    if unit.isdigit():
        num, unit = num + unit, ""
    if unit not in SIZE_UNITS or not num.isdigit():
        raise argparse.ArgumentTypeError(f"size {text!r}: expected a number with an optional K, M, G or T suffix")
    return int(num) * SIZE_UNITS[unit]

HOST = Resource("host", {"/v1/hosts": "hosts"})
L2 = Resource("L2 network", {"/v1/l2-networks": "l2_networks"})
L3 = Resource("L3 network", {"/v1/l3-networks": "l3_networks"})
VM = Resource("VM", {"/v1/vms": "vms"}, name_field="spec.name")
EIP = Resource("EIP", {"/v1/eips": "eips"})
IMAGE = Resource("image", {"/v1/images": "images"})
VOLUME = Resource("volume", {"/v1/volumes": "volumes"})
PRIMARY_STORAGE = Resource("primary storage", {"/v1/primary-storage": "primary_storages"})
