"""The `hs` CLI as a user runs it: a subprocess against a real coordinator."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.real


def hs(coordinator, token, *args, check=True):
    p = subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", coordinator.url, f"--token={token}", *args],
                       capture_output=True, text=True, timeout=30)
    if check and p.returncode:
        raise AssertionError(p.stderr)
    return p


def test_cli_round_trip(coordinator, token, run):
    net = run.subnet()
    host = json.loads(hs(coordinator, token, "--json", "host", "add", "cli-host", "198.18.0.7").stdout)
    assert host["token"]
    p = hs(coordinator, token, "host", "add", "cli-host-again", "198.18.0.7", check=False)  # one machine, twice
    assert p.returncode == 1 and f"host cli-host ({host['uuid']}) is the kvm host at 198.18.0.7 already" in p.stderr
    hs(coordinator, token, "host", "add", "cli-host-proxy", "198.18.0.7", "--kind", "consoleproxy")  # another kind
    l2 = json.loads(hs(coordinator, token, "--json", "l2", "create", "cli-l2", "--interface", "eth0").stdout)
    l3 = json.loads(hs(coordinator, token, "--json", "l3", "create", "cli-l3", "--l2", l2["uuid"], "--cidr", str(net),
                       "--range", f"{net[10]}-{net[20]}", "--service", "DHCP").stdout)
    vm = json.loads(hs(coordinator, token, "--json", "vm", "create", "cli-vm", "--l3", l3["uuid"], "--host",
                       "cli-host", "--stopped", "--tag", "userdata::hello").stdout)
    assert vm["spec"]["userdata"] == "hello"
    row = next(line for line in hs(coordinator, token, "vm", "list").stdout.splitlines() if vm["uuid"] in line)
    assert row.split()[1:4] == ["cli-vm", "cli-host", "Stopped"]  # its host by name
    assert [line.split()[0] for line in hs(coordinator, token, "vm", "list", "--host", "cli-host").stdout.splitlines()
            ] == ["uuid", vm["uuid"]]
    assert "cli-host" in hs(coordinator, token, "host", "list").stdout


def test_cli_lists_name_what_their_rows_refer_to(coordinator, token, run):
    private, public = run.subnet(), run.subnet()
    hs(coordinator, token, "host", "add", "cli-eip-host", "198.18.0.9")
    hs(coordinator, token, "l2", "create", "cli-eip-l2", "--interface", "eth1")
    for name, net, extra in (("cli-priv", private, ("--service", "EIP")), ("cli-pub", public, ("--public",))):
        hs(coordinator, token, "l3", "create", name, "--l2", "cli-eip-l2", "--cidr", str(net), "--range",
           f"{net[10]}-{net[20]}", *extra)
    vm = json.loads(hs(coordinator, token, "--json", "vm", "create", "cli-eip-vm", "--l3", "cli-priv", "--host",
                       "cli-eip-host", "--stopped").stdout)
    eip = json.loads(hs(coordinator, token, "--json", "eip", "create", "cli-eip", "--l3", "cli-pub").stdout)
    nic = vm["spec"]["nics"][0]
    hs(coordinator, token, "eip", "attach", "cli-eip", "--nic", nic["mac"])  # as `hs vm show` shows it: its VM found
    row = next(line for line in hs(coordinator, token, "eip", "list").stdout.splitlines() if eip["uuid"] in line)
    assert row.split() == [eip["uuid"], "cli-eip", eip["vip"], "cli-pub", "cli-eip-vm", nic["ip"]]
    listed = json.loads(hs(coordinator, token, "--json", "eip", "list").stdout)["eips"]
    assert next(e for e in listed if e["uuid"] == eip["uuid"]) == {**eip, "vm_uuid": vm["uuid"],
                                                                   "nic_uuid": nic["uuid"]}
    assert f"vm_uuid: {vm['uuid']}\nvm: cli-eip-vm\n" in hs(coordinator, token, "eip", "show", "cli-eip").stdout
    hs(coordinator, token, "eip", "detach", "cli-eip")
    attached = json.loads(hs(coordinator, token, "--json", "eip", "attach", "cli-eip", "cli-eip-vm", "--nic",
                             nic["ip"]).stdout)
    assert (attached["vm_uuid"], attached["nic_uuid"]) == (vm["uuid"], nic["uuid"])


def test_cli_errors_name_the_field(coordinator, token):
    p = hs(coordinator, token, "l3", "create", "x", "--l2", "missing", "--cidr", "198.18.200.0/24", check=False)
    assert p.returncode == 1 and "l2_uuid" in p.stderr and "Traceback" not in p.stderr
    p = hs(coordinator, token, "config", "set", "kvm", "vm.cacheMode", "turbo", check=False)
    assert p.returncode == 1 and "field value" in p.stderr
    p = subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", "http://127.0.0.1:9", "--token", "t",
                        "host", "list"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "cannot reach" in p.stderr


def test_cli_names_and_wait_against_the_coordinator(coordinator, token):
    host = json.loads(hs(coordinator, token, "--json", "host", "add", "cli-names", "198.18.0.8").stdout)
    twins = [json.loads(hs(coordinator, token, "--json", "vm", "create", "cli-twin", "--host", "cli-names",
                           "--stopped").stdout)["uuid"] for _ in range(2)]
    solo = json.loads(hs(coordinator, token, "--json", "vm", "create", "cli-solo", "--host", host["uuid"],
                         "--stopped").stdout)
    assert solo["host_uuid"] == host["uuid"]
    shown = hs(coordinator, token, "vm", "show", "cli-solo").stdout
    assert f"uuid: {solo['uuid']}" in shown and shown == hs(coordinator, token, "vm", "show", solo["uuid"]).stdout
    assert f"host_uuid: {host['uuid']}\nhost: cli-names\n" in shown  # its host by name, as in lists
    p = hs(coordinator, token, "vm", "migrate", "cli-solo", "cli-names", check=False)
    assert (p.returncode, p.stderr) == (1, f"hs: VM cli-solo is on host cli-names ({host['uuid']}) already "
                                           "(argument HOST, field host_uuid)\n")
    p = hs(coordinator, token, "vm", "start", "cli-solo", "--wait", "0.2", check=False)  # no agent: still pending
    waited = p.stdout
    assert "pending: state Running" in waited and p.returncode == 1
    assert p.stderr == "hs: --wait 0.2 ran out with state Running still pending; it goes on, not called off (look " \
                       "with the show command)\n"
    assert [line.split(":")[0] for line in waited.splitlines()] == [line.split(":")[0] for line in shown.splitlines()]
    p = hs(coordinator, token, "vm", "show", "cli-twin", check=False)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert all(f"{uuid} cli-twin" in p.stderr for uuid in twins) and "ambiguous" in p.stderr
    p = hs(coordinator, token, "vm", "destroy", "cli-nobody", check=False)
    assert p.returncode == 1 and p.stderr == "hs: VM cli-nobody does not exist (argument VM)\n"
    # a bare HOST:PORT means https since the trusted wire: test_strict_api.py tries it on a TLS coordinator


def test_a_second_l2_on_an_interface_and_an_overlapping_l3_on_one_l2_are_refused(coordinator, token, run):
    uplink, net = run.uplink(), run.subnet()
    first = json.loads(hs(coordinator, token, "--json", "l2", "create", "cli-up-a", "--interface", uplink).stdout)
    p = hs(coordinator, token, "l2", "create", "cli-up-b", "--interface", uplink, check=False)
    assert p.returncode == 1 and "--interface" in p.stderr, p.stderr
    assert f"{uplink} is already used by L2 network cli-up-a ({first['uuid']})" in p.stderr
    hs(coordinator, token, "l2", "create", "cli-up-b", "--interface", uplink, "--vlan", "7")  # a VLAN beside it
    hs(coordinator, token, "l3", "create", "cli-up-l3", "--l2", "cli-up-a", "--cidr", str(net))
    half = next(net.subnets(1))
    p = hs(coordinator, token, "l3", "create", "cli-up-half", "--l2", "cli-up-a", "--cidr", str(half), check=False)
    assert p.returncode == 1 and "--cidr" in p.stderr, p.stderr
    assert f"{half} overlaps {net} of L3 network cli-up-l3" in p.stderr
    hs(coordinator, token, "l3", "create", "cli-up-other", "--l2", "cli-up-b", "--cidr", str(net))  # another L2
    names = {row.split()[1] for row in hs(coordinator, token, "l3", "list").stdout.splitlines()[1:]}
    assert {"cli-up-l3", "cli-up-other"} <= names and "cli-up-half" not in names


def test_cli_errors_name_the_argument_an_operator_gave(coordinator, token, run):
    """What a walk through `hs` found: each refusal names the flag at fault, --json goes after the verb too."""
    net = run.subnet()
    for name, address in (("cli-args", "198.18.0.12"), ("cli-args-2", "198.18.0.13")):
        hs(coordinator, token, "host", "add", name, address)
    hs(coordinator, token, "l2", "create", "cli-args-l2", "--interface", run.uplink())
    for name, cidr in (("cli-args-a", net), ("cli-args-b", run.subnet())):
        hs(coordinator, token, "l3", "create", name, "--l2", "cli-args-l2", "--cidr", str(cidr), "--range",
           f"{cidr[10]}-{cidr[20]}")
    vm = json.loads(hs(coordinator, token, "vm", "create", "cli-args-vm", "--l3", "cli-args-a", "--host", "cli-args",
                       "--stopped", "--json").stdout)
    for argv, error in (
            (("vm", "create", "x", "--l3", "cli-args-a", "--default-l3", "cli-args-b", "--host", "cli-args"),
             "default_l3_uuid: must be one of l3_network_uuids (argument --default-l3, field default_l3_uuid)"),
            (("vm", "attach-nic", "cli-args-vm", "--l3", "cli-args-b", "--mac", "01:00:5e:00:00:01"),
             "a NIC needs a unicast one (argument --mac, field mac)"),
            (("vm", "attach-nic", "cli-args-vm", "--l3", "cli-args-b", "--mac", vm["spec"]["nics"][0]["mac"]),
             "is already used by a NIC on L2 network"),
            (("vm", "migrate", "cli-args-vm", "cli-args-2", "--live"), "(argument --live, field live)"),
            (("vm", "cancel-migration", "cli-args-vm"), "is not moving live (argument VM, field uuid)"),
            (("volume", "create", "v", "--primary-storage", "cli-nowhere", "--size", "1G"),
             "hs: primary storage cli-nowhere does not exist (argument --primary-storage"),
            (("volume", "list", "--primary-storage", "cli-nowhere"), "(argument --primary-storage, field "),
            (("storage", "add-local", "cli-rel", "rel/path"), "body field url: 'rel/path' is not an absolute"),
            (("vm", "create", "x", "--host", "cli-args", "--tag", "sshkey::ssh-ed25519 AAAA me"),
             "not an SSH public key of type ssh-ed25519: '<type> <base64> [comment]', as in ~/.ssh/id_*.pub "
             "(argument --tag, field system_tags)"),
            (("tag", "create", "cli-args-vm", "sshkey::ssh-rsa AAAA me\nssh-rsa BBBB"),
             "is one line of printable text: '<type> <base64> [comment]' (argument TAG, field tag)")):
        p = hs(coordinator, token, *argv, check=False)
        assert p.returncode == 1 and error in p.stderr and len(p.stderr.splitlines()) == 1, (argv, p.stderr)
