"""deployer.render: config the agent's loader reads back, a unit that runs the current venv after libvirt."""

from __future__ import annotations

import tomllib

from deployer import render
from deployer.cephagent import SPEC as CEPH
from deployer.consoleproxy import SPEC as PROXY
from deployer.kvmagent import SPEC as KVM
from deployer.model import AgentApiTokens


def test_config_round_trips_awkward_values():
    token = 'a"b\\c\u00e9\n{{ x }}'
    assert tomllib.loads(render.agent_config(KVM, "http://[fd00::1]:8740", "u-1", token)) == {
        "coordinator_url": "http://[fd00::1]:8740", "host_uuid": "u-1", "host_token": token,
        "tls": {"plain_http": True}}


def test_the_kvmagent_gets_the_tokens_of_its_own_api_apart_from_the_hosts():
    api = AgentApiTokens("a" * 43, "m" * 20)
    assert tomllib.loads(render.agent_config(KVM, "https://c", "u", "t" * 16, api)) == {
        "coordinator_url": "https://c", "host_uuid": "u", "host_token": "t" * 16, "api_token": "a" * 43,
        "metrics_token": "m" * 20, "tls": {"ca": "/etc/hoststack/pki/ca.pem"}}
    no_scraper = tomllib.loads(render.agent_config(KVM, "https://c", "u", "t" * 16, AgentApiTokens("a" * 43, None)))
    assert no_scraper["api_token"] == "a" * 43 and "metrics_token" not in no_scraper
    assert KVM.agent_api


def test_the_console_proxy_gets_the_scrapers_metrics_token_and_no_api_token():
    assert PROXY.agent_api
    assert tomllib.loads(render.agent_config(PROXY, "https://c", "u", "t" * 16, AgentApiTokens(None, "m" * 20))) == {
        "coordinator_url": "https://c", "uuid": "u", "token": "t" * 16, "metrics_token": "m" * 20,
        "tls": {"ca": "/etc/hoststack/pki/ca.pem"}}


def test_each_agent_gets_its_own_setting_names():
    assert tomllib.loads(render.agent_config(CEPH, "http://c", "u", "t" * 16)) == {"token": "t" * 16,
                                                                                   "tls": {"plain_http": True}}


def test_the_cephagent_gets_the_scrapers_metrics_token_beside_its_own():
    assert CEPH.agent_api
    assert tomllib.loads(render.agent_config(CEPH, "http://c", "u", "t" * 16, AgentApiTokens(None, "m" * 20))) == {
        "token": "t" * 16, "metrics_token": "m" * 20, "tls": {"plain_http": True}}


def test_over_https_agents_trust_the_ca_and_those_that_never_dial_in_get_their_certificate():
    pki = "/etc/hoststack/pki"
    assert tomllib.loads(render.agent_config(KVM, "https://c:8740", "u", "t" * 16))["tls"] == {"ca": f"{pki}/ca.pem"}
    assert tomllib.loads(render.agent_config(CEPH, "https://c:8740", "u", "t" * 16))["tls"] == {
        "ca": f"{pki}/ca.pem", "cert": f"{pki}/cephagent.pem", "key": f"{pki}/cephagent-key.pem"}


def test_a_certificate_is_due_when_missing_or_a_third_of_its_life_is_left():
    assert render.certificate_due({})
    assert render.certificate_due({"tls": "garbage"})
    stamp = {"tls": "[1000, 4000]"}
    assert not render.certificate_due(stamp, now=2999) and render.certificate_due(stamp, now=3001)


def test_unit_orders_after_libvirt_and_runs_the_current_venv():
    unit = render.systemd_unit(KVM.service)
    assert "After=network-online.target libvirtd.service\n" in unit
    assert "ExecStart=/opt/hoststack/kvmagent/current/bin/kvmagent\n" in unit and "Restart=always\n" in unit
    assert "LimitNOFILE=65536\n" in unit  # guests' connections take descriptors; systemd leaves 1,024
