"""cloud-init's own datasources (Debian's cloud-init as a library, in VM namespaces) against our server."""

from __future__ import annotations

import json

import pytest

from agentkit.proc import arun
from flatnet.metadata import MetadataService
from testbed import cloudinit
from testbed.metadatalab import LabVm, MetadataLab
from testbed.netns import Run

pytestmark = pytest.mark.real
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsTestKeyForMetadataOnlyXXXXXXXXXXXXXXXXXXXX alice@lab"
USERDATA = "#cloud-config\nruncmd:\n  - echo hello-from-hoststack\n"


@pytest.fixture
def run():
    with Run() as r:
        yield r


async def _served(run: Run, imds: str = "optional") -> tuple[MetadataLab, LabVm, MetadataService]:
    lab = MetadataLab.create(run, imds=imds)
    vm = lab.add_vm("Web Server_01", userdata=USERDATA, ssh_keys={"alice": KEY})
    return lab, vm, await lab.serve()


async def _datasource(vm: LabVm, run: Run, mode: str, url: str, *extra: str, max_wait: float = 6) -> dict:
    out = await arun(cloudinit.argv(vm.ns, mode, url, run.path(mode), *extra, max_wait=max_wait), timeout=60)
    return {**json.loads(out.stdout), "log": out.stderr}


@pytest.mark.parametrize("mode", ["ec2", "ec2-aws"])
async def test_ec2_datasource_reads_what_we_set(run, mode):
    lab, vm, service = await _served(run, imds="required" if mode == "ec2-aws" else "optional")
    try:
        got = await _datasource(vm, run, mode, "http://169.254.169.254")
    finally:
        await service.close()
    assert got["ok"]
    assert got["instance_id"] == vm.spec.uuid
    assert got["hostname"] == "web-server-01"
    assert got["keys"] == [KEY]
    assert got["userdata"] == USERDATA
    assert got["az"] == service.settings.availability_zone
    assert got["metadata"]["local-ipv4"] == vm.nic.ip
    assert got["metadata"]["network"]["interfaces"]["macs"][vm.nic.mac]["subnet-ipv4-cidr-block"] == lab.l3.cidr


async def test_imds_required_refuses_the_v1_client(run):
    _lab, vm, service = await _served(run, imds="required")
    try:
        got = await _datasource(vm, run, "ec2", "http://169.254.169.254", max_wait=1.5)
    finally:
        await service.close()
    assert got["ok"] is False
    assert "bad status code [401]" in got["log"]


async def test_openstack_datasource_reads_what_we_set(run):
    lab, vm, service = await _served(run)
    try:
        got = await _datasource(vm, run, "openstack", "http://169.254.169.254")
    finally:
        await service.close()
    assert got["ok"]
    assert got["instance_id"] == vm.spec.uuid
    assert got["hostname"] == "web-server-01"
    assert got["keys"] == [KEY]
    assert got["userdata"] == USERDATA
    assert got["network_json"]["links"][0]["ethernet_mac_address"] == vm.nic.mac
    assert got["network_json"]["networks"][0]["type"] == "ipv4_dhcp"


async def test_cloudstack_datasource_reads_what_we_set_on_the_dhcp_address(run):
    lab, vm, service = await _served(run)
    try:
        got = await _datasource(vm, run, "cloudstack", f"http://{lab.l3.dhcp_address}", str(lab.l3.dhcp_address))
    finally:
        await service.close()
    assert got["ok"]
    assert got["instance_id"] == vm.spec.uuid
    assert got["hostname"] == "web-server-01"
    assert got["keys"] == [KEY]
    assert got["userdata"] == USERDATA
    assert got["az"] == service.settings.availability_zone
