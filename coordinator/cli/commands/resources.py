"""The objects that arguments of several groups refer to by uuid or name (Ceph's own are in ceph.py)."""

from __future__ import annotations

from coordinator.cli.declare import Named, Resource

HOST = Resource("host", {"/v1/hosts": "hosts"})
L2 = Resource("L2 network", {"/v1/l2-networks": "l2_networks"})
L3 = Resource("L3 network", {"/v1/l3-networks": "l3_networks"})
VM = Resource("VM", {"/v1/vms": "vms"}, name_field="spec.name")
EIP = Resource("EIP", {"/v1/eips": "eips"})
PRIMARY_STORAGE = Resource("primary storage", {"/v1/primary-storage": "primary_storages"})
CONSOLE_PROXY = Resource("console proxy", {"/v1/console-proxies": "console_proxies"})

# a VM prints its host by name, whichever command answered with it (`hs vm show`, `hs vm start`, `hs volume attach`)
VM_NAMES = (Named("host_uuid", (HOST,)),)
