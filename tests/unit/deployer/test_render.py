"""deployer.render: config the agent's loader reads back, a unit that runs the current venv after libvirt."""

from __future__ import annotations

import tomllib

from deployer import render
from deployer.cephagent import SPEC as CEPH
from deployer.kvmagent import SPEC as KVM


def test_config_round_trips_awkward_values():
    token = 'a"b\\c\u00e9\n{{ x }}'
    assert tomllib.loads(render.agent_config(KVM, "http://[fd00::1]:8740", "u-1", token)) == {
        "coordinator_url": "http://[fd00::1]:8740", "host_uuid": "u-1", "host_token": token}


def test_each_agent_gets_its_own_setting_names():
    assert tomllib.loads(render.agent_config(CEPH, "http://c", "u", "t" * 16)) == {"token": "t" * 16}


def test_unit_orders_after_libvirt_and_runs_the_current_venv():
    unit = render.systemd_unit(KVM)
    assert "After=network-online.target libvirtd.service\n" in unit
    assert "ExecStart=/opt/hoststack/kvmagent/current/bin/kvmagent\n" in unit and "Restart=always\n" in unit
    assert "LimitNOFILE=65536\n" in unit  # guests' connections take descriptors; systemd leaves 1,024
