"""`hs` end to end in this process, against a fake coordinator on loopback: names resolve through the list
endpoint, `--wait` prints what `show` prints, every failure is one line with exit status 1.

The fake answers only what these tests ask; tests/functional/coordinator/test_cli.py runs `hs` against
the real coordinator.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from coordinator.cli import session
from coordinator.cli.commands import ceph, hosts, storage, vms
from coordinator.cli.declare import Call
from coordinator.cli.errors import CliError
from coordinator.cli.main import main
from deployer import deploy as deployer  # at collection: importing ansible runs ldconfig
from deployer.model import Result

TOKEN = "admin"
TINY = "6f1c0000000000000000000000000001"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
DUP1, DUP2 = "6f1c0000000000000000000000000002", "6f1c0000000000000000000000000003"


GONE = "6f1c0000000000000000000000000099"  # a VM an EIP still names, deleted since


def _vm(uuid: str, name: str, state: str = "Stopped") -> dict[str, Any]:
    return {"uuid": uuid, "host_uuid": "h1", "spec": {"uuid": uuid, "name": name, "state": state,
                                                      "nics": [{"uuid": f"nic-{uuid[-2:]}", "ip": "10.0.0.5",
                                                                "mac": f"fa:16:3e:00:00:{uuid[-2:]}"}]},
            "observed": None}


def _eip(uuid: str, vm: str | None, nic: str | None) -> dict[str, Any]:
    return {"uuid": uuid, "name": f"eip-{uuid}", "vip": "203.0.113.9", "public_l3_uuid": "l3-b", "vm_uuid": vm,
            "nic_uuid": nic}


def _tag(uuid: str, vm: str) -> dict[str, Any]:
    return {"uuid": uuid, "resource_uuid": vm, "resource_type": "VmInstanceVO", "tag": "userdata::x"}


def _volume(uuid: str, storage: str, **fields: Any) -> dict[str, Any]:
    return {"uuid": uuid, "name": f"vol-{uuid}", "primary_storage_uuid": storage, "type": "Data", **fields,
            "size": 1 << 30, "status": "Ready"}


class FakeCoordinator:
    """VMs `tiny`, `dup` twice, and one named like tiny's uuid, on host `kvm1`, each with a NIC of IP 10.0.0.5 (MACs
    and uuids differ); L3s `a` and `b`; EIPs on `b` (attached to tiny, to a VM gone since, and to none; attached
    as asked); a LocalStorage volume of tiny and a Ceph one; deletes
    of L3s and tags and a host's SSH credentials stored, answered with nothing; records what it was asked."""

    def __init__(self) -> None:
        self.vms = {v["uuid"]: v for v in (_vm(TINY, "tiny"), _vm(DUP1, "dup"), _vm(DUP2, "dup"),
                                           _vm("6f1c0000000000000000000000000004", TINY))}
        self.l3s = [{"uuid": "l3-a", "name": "a"}, {"uuid": "l3-b", "name": "b"}]
        self.eips = [_eip("e1", TINY, "nic-01"), _eip("e2", GONE, "nic-gone"), _eip("e3", None, None)]
        self.volumes = [_volume("lv", "l1", host_uuid="h1", vm_uuid=TINY), _volume("cv", "c1")]
        self.hosts = [{"uuid": "h1", "name": "kvm1", "address": "10.0.0.2", "kind": "kvm", "ssh_host_keys": [KEY]},
                      {"uuid": "h2", "name": "mon1", "address": "10.0.0.1", "kind": "ceph", "ssh_host_keys": [KEY]},
                      {"uuid": "h3", "name": "mon4", "address": "10.0.0.4", "kind": "ceph", "ssh_host_keys": []}]
        self.delay = 0.0  # seconds an action takes
        self.interrupt = False  # whether an action's request is met with a Ctrl-C of `hs`
        self.stuck = False  # whether an action's wait runs out before the host reports it (202 `pending`)
        self.requests: list[tuple[str, str, dict[str, str], object]] = []
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/v1/vms", self._vms)
        app.router.add_get("/v1/vms/{uuid}", self._vm)
        app.router.add_post("/v1/vms/{uuid}/actions", self._action)
        app.router.add_post("/v1/vms", self._create)
        app.router.add_post("/v1/eips/{uuid}/attach", self._attach)
        app.router.add_get("/v1/l3-networks", self._l3s)
        app.router.add_get("/v1/hosts", self._hosts)
        app.router.add_post("/v1/ceph-backup-storage", self._add_storage)
        app.router.add_post("/v1/hosts", self._add_storage)
        app.router.add_post("/v1/hosts/{uuid}/ssh/reveal", self._reveal)
        app.router.add_put("/v1/hosts/{uuid}/ssh-host-keys", self._host)
        for path in ("/v1/l3-networks/{uuid}", "/v1/system-tags/{uuid}", "/v1/hosts/{uuid}/ssh"):
            app.router.add_route("*", path, self._nothing)
        for path, answer in (("/v1/eips", {"eips": self.eips}), ("/v1/volumes", {"volumes": self.volumes}),
                             ("/v1/system-tags", {"tags": [_tag("t1", TINY), _tag("t2", GONE)]}),
                             ("/v1/primary-storage", {"primary_storages": [{"uuid": "l1", "name": "local"}]}),
                             ("/v1/ceph-primary-storage", {"primary_storages": [{"uuid": "c1", "name": "ceph"}]})):
            app.router.add_get(path, self._answer(answer))
        for path, rows in (("/v1/eips/{uuid}", self.eips), ("/v1/volumes/{uuid}", self.volumes)):
            app.router.add_get(path, self._one(rows))
        return app

    def _answer(self, answer: dict[str, Any]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response(answer)
        return handler

    def _one(self, rows: list[dict[str, Any]]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response(next(r for r in rows if r["uuid"] == request.match_info["uuid"]))
        return handler

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, dict(request.query), body))
        return await handler(request)

    async def _vms(self, request: web.Request) -> web.Response:
        return web.json_response({"vms": list(self.vms.values())})

    async def _l3s(self, request: web.Request) -> web.Response:
        return web.json_response({"l3_networks": self.l3s})

    async def _hosts(self, request: web.Request) -> web.Response:
        return web.json_response({"hosts": self.hosts})

    async def _add_storage(self, request: web.Request) -> web.Response:
        return web.json_response({"name": (await request.json())["name"]}, status=201)

    async def _host(self, request: web.Request) -> web.Response:
        return web.json_response(next(h for h in self.hosts if h["uuid"] == request.match_info["uuid"]))

    async def _reveal(self, request: web.Request) -> web.Response:
        """The stored SSH credentials of the hosts that have them (port 2222)."""
        host = next(h for h in self.hosts if h["uuid"] == request.match_info["uuid"])
        if not host.get("ssh_credentials"):
            return web.json_response({"error": {"code": "not_found", "message": "none", "field": None}}, status=404)
        return web.json_response({"user": "root", "port": 2222, "password": "pw", "key_file": None})

    async def _nothing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _attach(self, request: web.Request) -> web.Response:
        eip = next(e for e in self.eips if e["uuid"] == request.match_info["uuid"])
        eip.update({"vm_uuid": (body := await request.json())["vm_uuid"], "nic_uuid": body.get("nic_uuid")})
        return web.json_response(eip)

    async def _vm(self, request: web.Request) -> web.Response:
        return web.json_response(self.vms[request.match_info["uuid"]])

    async def _action(self, request: web.Request) -> web.Response:
        vm = self.vms[request.match_info["uuid"]]
        if self.interrupt:
            signal.raise_signal(signal.SIGINT)  # handled in the main thread, where `hs` runs
        await asyncio.sleep(self.delay)
        vm["spec"]["state"] = "Running"
        if self.stuck:
            return web.json_response({**vm, "pending": "state Running"}, status=202)
        vm["observed"] = "Running"
        return web.json_response(vm)

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        for field, bad in (("cpu", body["cpu"] > 8), ("memory_mb", body["memory_mb"] > 4096),
                           ("l3_network_uuids.1", body["name"] == "bad-l3"), ("fixed_ips", body["name"] == "bad-ip")):
            if bad:
                return web.json_response({"error": {"code": "invalid", "message": f"body field {field}: too many",
                                                    "field": field}}, status=400)
        return web.json_response(_vm("6f1c0000000000000000000000000009", body["name"]), status=201)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCoordinator]:
    monkeypatch.setenv("HS_CLI_CONFIG", "/nonexistent/cli.toml")
    for var in ("HS_URL", "HS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    fake = FakeCoordinator()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(fake.app())
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"  # plain: a bare HOST:PORT would mean https
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    yield fake
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.run_until_complete(runner.cleanup())
    loop.close()


def hs(fake: FakeCoordinator, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `hs --url … --token … ARGV`."""
    code = 0
    try:
        main(["--url", fake.url, "--token", TOKEN, *argv])
    except SystemExit as e:  # sys.exit("hs: …") prints its text and exits 1, as the interpreter would
        code = 1 if isinstance(e.code, str) else int(e.code or 0)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_show_takes_a_unique_name_or_a_uuid(fake, capsys):
    by_name = hs(fake, capsys, "vm", "show", "tiny")
    assert by_name[0] == 0 and f"uuid: {TINY}" in by_name[1] and "spec.name: tiny" in by_name[1]
    assert hs(fake, capsys, "vm", "show", TINY) == by_name
    assert [r[:2] for r in fake.requests[-2:]] == [("GET", f"/v1/vms/{TINY}"), ("GET", "/v1/hosts")]  # its host's name


def test_an_exact_uuid_wins_over_a_vm_named_like_it(fake, capsys):
    assert "spec.name: tiny" in hs(fake, capsys, "vm", "show", TINY)[1]


def test_an_ambiguous_name_fails_in_one_line_listing_the_matches(fake, capsys):
    code, out, err = hs(fake, capsys, "vm", "start", "dup")
    assert (code, out) == (1, "")
    assert err.splitlines() == [f"hs: VM name dup is ambiguous: {DUP1} dup, {DUP2} dup; give a uuid (argument VM)"]
    assert not [r for r in fake.requests if r[0] == "POST"]


def test_an_unknown_name_fails_in_one_line(fake, capsys):
    assert hs(fake, capsys, "vm", "show", "nope") == (1, "", "hs: VM nope does not exist (argument VM)\n")


def test_wait_prints_the_vm_as_show_does(fake, capsys):
    code, waited, _ = hs(fake, capsys, "vm", "start", "tiny", "--wait", "30")
    assert code == 0 and fake.requests[-2] == ("POST", f"/v1/vms/{TINY}/actions", {"wait": "30.0"},
                                               {"action": "start"})
    assert waited == hs(fake, capsys, "vm", "show", "tiny")[1]
    assert "observed: Running" in waited and "host_uuid: h1\nhost: kvm1\n" in waited


def test_a_wait_that_runs_out_prints_the_vm_and_fails_saying_what_goes_on(fake, capsys):
    fake.stuck = True
    code, out, err = hs(fake, capsys, "vm", "start", "tiny", "--wait", "2.5")
    assert code == 1 and "spec.state: Running\n" in out and "pending: state Running\n" in out
    assert err == "hs: --wait 2.5 ran out with state Running still pending; it goes on, not called off (look with " \
                  "the show command)\n"
    code, out, err = hs(fake, capsys, "vm", "start", "tiny", "--wait", "2.5", "--json")
    assert code == 1 and json.loads(out)["pending"] == "state Running" and "still pending" in err


def test_ctrl_c_before_a_change_is_answered_says_it_may_still_be_done(fake, capsys):
    fake.delay, fake.interrupt = 2.0, True
    # Ctrl-C as in a terminal: a test run started in the background (a shell's `&`, CI) inherits SIGINT ignored
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, out, err = hs(fake, capsys, "vm", "stop", "tiny", "--wait", "30")
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert (code, out) == (130, "")
    assert err == ("hs: interrupted before the coordinator answered: what was asked may still be done; look with "
                   "the show command before asking again\n")


def test_names_in_flags_and_pairs_resolve_with_one_list_each(fake, capsys):
    code, _, err = hs(fake, capsys, "vm", "create", "web", "--l3", "a", "--l3", "l3-b", "--ip", "b=10.0.0.7",
                      "--stopped")
    assert code == 0, err
    assert [r[1] for r in fake.requests] == ["/v1/l3-networks", "/v1/vms", "/v1/hosts"]
    body = fake.requests[1][3]
    assert isinstance(body, dict)
    assert (body["l3_network_uuids"], body["fixed_ips"], body["state"]) == (["l3-a", "l3-b"], {"l3-b": "10.0.0.7"},
                                                                           "Stopped")
    assert "kernel" not in body and "host_uuid" not in body  # not given: the API's default applies


def test_an_unknown_name_in_a_flag_names_the_argument_and_the_field(fake, capsys):
    assert hs(fake, capsys, "vm", "create", "web", "--l3", "c")[2] == \
        "hs: L3 network c does not exist (argument --l3, field l3_network_uuids)\n"


def test_api_errors_are_one_line_naming_the_field_and_the_argument_that_filled_it(fake, capsys):
    assert hs(fake, capsys, "vm", "create", "web", "--cpu", "9") == (1, "", "hs: body field cpu: too many "
                                                                          "(argument --cpu, field cpu)\n")
    assert hs(fake, capsys, "vm", "create", "web", "--memory", "8192")[2] == \
        "hs: body field memory_mb: too many (argument --memory, field memory_mb)\n"
    assert hs(fake, capsys, "vm", "create", "bad-l3", "--l3", "a", "--l3", "b")[2] == \
        "hs: body field l3_network_uuids.1: too many (argument --l3, field l3_network_uuids.1)\n"
    assert hs(fake, capsys, "vm", "create", "bad-ip", "--ip", "a=10.0.0.7")[2] == \
        "hs: body field fixed_ips: too many (argument --ip, field fixed_ips)\n"  # built from it by a function


def test_an_api_error_about_a_filter_or_the_path_s_object_names_the_argument_that_gave_it():
    """`hs volume list --primary-storage nope`: the API's `primary_storage_uuid` came from the flag; `hs vm
    cancel-migration web` of a VM not moving: the API's `uuid`, the object of its path, is the argument VM."""
    for group, verb, field, named in ((storage.VOLUME_GROUP, "list", "primary_storage_uuid", "--primary-storage"),
                                      (vms.GROUP, "cancel-migration", "uuid", "VM")):
        command = next(c for c in group.commands if c.verb == verb)
        assert isinstance(command.action, Call)
        assert session.naming(command.args, command.action, field) == f"argument {named}, field {field}"


def test_an_unreachable_coordinator_is_one_line(fake, capsys):
    fake.url = "http://127.0.0.1:9"
    code, _, err = hs(fake, capsys, "vm", "list")
    assert code == 1 and err.startswith("hs: cannot reach the coordinator at http://127.0.0.1:9: ")
    assert len(err.splitlines()) == 1


def test_lists_name_what_their_rows_refer_to_and_json_keeps_the_api_answer(fake, capsys):
    code, out, err = hs(fake, capsys, "eip", "list")
    assert code == 0, err
    assert [line.split() for line in out.splitlines()] == [
        ["uuid", "name", "vip", "public_l3", "vm", "nic"],
        ["e1", "eip-e1", "203.0.113.9", "b", "tiny", "10.0.0.5"],
        ["e2", "eip-e2", "203.0.113.9", "b", GONE, "nic-gone"],  # a VM gone since: its uuid
        ["e3", "eip-e3", "203.0.113.9", "b", "-", "-"]]
    assert json.loads(hs(fake, capsys, "--json", "eip", "list")[1]) == {"eips": fake.eips}
    assert [line.split()[3:6] for line in hs(fake, capsys, "volume", "list")[1].splitlines()] == [
        ["primary_storage", "host", "vm"], ["local", "kvm1", "tiny"], ["ceph", "-", "-"]]
    assert [line.split()[2] for line in hs(fake, capsys, "vm", "list")[1].splitlines()] == ["host"] + ["kvm1"] * 4
    assert [line.split() for line in hs(fake, capsys, "tag", "query")[1].splitlines()] == [
        ["uuid", "resource", "tag"], ["t1", "tiny", "userdata::x"], ["t2", GONE, "userdata::x"]]


def test_one_object_shows_each_name_under_its_uuid_listing_only_what_it_refers_to(fake, capsys):
    def asked(*argv: str) -> tuple[str, list[str]]:
        before = len(fake.requests)
        code, out, err = hs(fake, capsys, *argv)
        assert code == 0, err
        return out, [r[1] for r in fake.requests[before:]]

    out, paths = asked("volume", "show", "cv")
    assert "primary_storage_uuid: c1\nprimary_storage: ceph\ntype: Data" in out and "host" not in out
    assert paths == ["/v1/volumes", "/v1/volumes/cv", "/v1/primary-storage", "/v1/ceph-primary-storage"]
    assert fake.requests[-1][2] == {"live": "false"}
    out, paths = asked("volume", "show", "lv")
    assert "host_uuid: h1\nhost: kvm1\n" in out and f"vm_uuid: {TINY}\nvm: tiny\n" in out
    assert paths == ["/v1/volumes", "/v1/volumes/lv", "/v1/primary-storage", "/v1/hosts", "/v1/vms"]
    out, paths = asked("eip", "show", "e3")
    assert out.splitlines() == ["uuid: e3", "name: eip-e3", "vip: 203.0.113.9", "public_l3_uuid: l3-b",
                                "public_l3: b", "vm_uuid: -", "nic_uuid: -"]
    assert paths == ["/v1/eips", "/v1/eips/e3", "/v1/l3-networks"]  # attached to nothing: no VM listed


def test_an_eip_attaches_to_a_nic_given_by_its_mac_or_ip_on_the_vm_named_or_on_any(fake, capsys):
    """`hs eip attach EIP [VM] --nic NIC`: the NIC as `hs vm show` shows it; its VM need not be named."""
    def attached(*argv: str) -> tuple[object, str]:
        code, out, err = hs(fake, capsys, "eip", "attach", "e3", *argv)
        assert code == 0, err
        return next(r[3] for r in reversed(fake.requests) if r[:2] == ("POST", "/v1/eips/e3/attach")), out

    body, out = attached("--nic", "FA:16:3E:00:00:02")  # as a MAC is often written
    assert body == {"vm_uuid": DUP1, "nic_uuid": "nic-02"}
    assert f"vm_uuid: {DUP1}\nvm: dup\nnic_uuid: nic-02\nnic: 10.0.0.5\n" in out
    assert attached("tiny", "--nic", "10.0.0.5")[0] == {"vm_uuid": TINY, "nic_uuid": "nic-01"}
    assert attached("--nic", "nic-03")[0] == {"vm_uuid": DUP2, "nic_uuid": "nic-03"}
    assert attached("tiny")[0] == {"vm_uuid": TINY}  # the VM's default NIC, as the API picks it


def test_a_nic_address_that_names_no_nic_or_several_fails_in_one_line(fake, capsys):
    for argv, err in (
            (["--nic", "10.0.0.5"], "NIC address 10.0.0.5 is ambiguous: nic-01 10.0.0.5, nic-02 10.0.0.5, "
                                    "nic-03 10.0.0.5, nic-04 10.0.0.5; give a uuid (argument --nic, field nic_uuid, "
                                    "on any VM)"),
            (["tiny", "--nic", "fa:16:3e:00:00:02"], "NIC fa:16:3e:00:00:02 does not exist (argument --nic, field "
                                                      "nic_uuid, on VM tiny)"),
            (["--nic", "10.0.0.6"], "NIC 10.0.0.6 does not exist (argument --nic, field nic_uuid, on any VM)"),
            ([], "give the VM, its NIC (--nic), or both")):
        assert hs(fake, capsys, "eip", "attach", "e3", *argv) == (1, "", f"hs: {err}\n")
    assert not [r for r in fake.requests if r[0] == "POST"]


def test_a_call_answered_with_nothing_says_what_it_did_to_which_object(fake, capsys):
    assert hs(fake, capsys, "l3", "delete", "a") == (0, "deleted L3 network a (l3-a)\n", "")
    assert fake.requests[-2:] == [("GET", "/v1/l3-networks", {}, None), ("DELETE", "/v1/l3-networks/l3-a", {}, None)]
    assert hs(fake, capsys, "l3", "delete", "l3-b") == (0, "deleted L3 network b (l3-b)\n", "")  # listed anyway
    assert hs(fake, capsys, "tag", "delete", "t1") == (0, "deleted tag t1\n", "")  # a uuid never resolved
    assert fake.requests[-1][:2] == ("DELETE", "/v1/system-tags/t1")
    assert hs(fake, capsys, "deploy", "ssh", "kvm1", "--password", "pw") == (0, "stored ssh of host kvm1 (h1)\n", "")
    assert fake.requests[-1] == ("PUT", "/v1/hosts/h1/ssh", {}, {"password": "pw"})
    assert hs(fake, capsys, "--json", "l3", "delete", "a") == (0, "null\n", "")  # the API's answer, as scripts read it


def test_a_call_that_asks_the_coordinator_to_wait_may_take_that_long(fake, capsys, monkeypatch):
    monkeypatch.setattr(session, "ANSWER_TIME", 0.2)  # beyond the wait asked for
    fake.delay = 0.6
    code, _, err = hs(fake, capsys, "vm", "start", "tiny", "--wait", "0")
    assert code == 1 and err.startswith("hs: cannot reach the coordinator")
    assert hs(fake, capsys, "vm", "start", "tiny", "--wait", "1")[0] == 0


def test_adding_ceph_storage_sends_the_ssh_host_keys_of_mons_that_have_none_recorded(fake, capsys, monkeypatch):
    scanned: list[tuple[str, int]] = []

    async def scan(address: str, port: int, hint: str) -> list[str]:
        scanned.append((address, port))
        if address == "10.0.0.3":
            raise CliError(f"no SSH host key read from {address}:{port}: Connection refused ({hint})")
        return [f"{KEY[:-1]}{address[-1]}"]

    monkeypatch.setattr(ceph, "scan", scan)
    urls = "root:s3cret@10.0.0.1,root:s3cret@10.0.0.2:2222,root:s3cret@10.0.0.3,root:s3cret@10.0.0.2/?monPort=6790," \
           "root:s3cret@10.0.0.4"
    code, _, err = hs(fake, capsys, "ceph", "add-backup-storage", "bs1", "--mon-url", urls)
    assert code == 0, err
    assert scanned == [("10.0.0.2", 2222), ("10.0.0.3", 22), ("10.0.0.4", 22)]  # 10.0.0.1: a ceph host with keys
    assert fake.requests[-1] == ("POST", "/v1/ceph-backup-storage", {"wait": "300.0"}, {
        "name": "bs1", "mon_urls": urls, "zone": "default",
        "ssh_host_keys": {"10.0.0.2": [f"{KEY[:-1]}2"], "10.0.0.4": [f"{KEY[:-1]}4"]}})
    assert err == ("hs: warning: mon root:***@10.0.0.3:22/?monPort=6789: no SSH host key read from 10.0.0.3:22: "
                   "Connection refused (a deploy of its cephagent needs it: hs host ssh-host-key HOST records it once "
                   "the mon is a ceph host)\n")


def test_a_host_added_with_any_ssh_flag_is_added_with_ssh_credentials(fake, capsys, monkeypatch):
    """`--user` or `--port` alone (ssh's own keys log in): neither is dropped without a word."""
    async def scan(address: str, port: int) -> list[str]:
        return [f"key of {address}:{port}"]

    monkeypatch.setattr(hosts, "scan", scan)
    monkeypatch.delenv("HS_SSH_PASSWORD", raising=False)
    assert hs(fake, capsys, "host", "add", "kvm9", "10.0.0.9", "--user", "admin", "--port", "2222")[0] == 0
    assert fake.requests[-1][3] == {"name": "kvm9", "address": "10.0.0.9", "kind": "kvm",
                                    "ssh": {"user": "admin", "port": 2222}, "ssh_host_keys": ["key of 10.0.0.9:2222"]}
    assert hs(fake, capsys, "host", "add", "kvm8", "10.0.0.8")[0] == 0
    assert fake.requests[-1][3] == {"name": "kvm8", "address": "10.0.0.8", "kind": "kvm"}  # none: no deploy


def test_a_host_key_is_read_from_the_port_its_deploys_use(fake, capsys, monkeypatch):
    """`hs host ssh-host-key HOST` read port 22 whatever SSH port the host's deploys log in at."""
    scanned: list[tuple[str, int]] = []

    async def scan(address: str, port: int) -> list[str]:
        scanned.append((address, port))
        return [KEY]

    monkeypatch.setattr(hosts, "scan", scan)
    fake.hosts[0]["ssh_credentials"] = True  # kvm1's, stored with port 2222
    for argv in ([], ["--port", "2200"]):
        assert hs(fake, capsys, "host", "ssh-host-key", "kvm1", *argv)[0] == 0
    assert hs(fake, capsys, "host", "ssh-host-key", "mon4")[0] == 0  # no credentials stored: ssh's own port
    assert scanned == [("10.0.0.2", 2222), ("10.0.0.2", 2200), ("10.0.0.4", 22)]
    assert fake.requests[-1][:2] == ("PUT", "/v1/hosts/h3/ssh-host-keys")


def test_a_host_named_twice_is_deployed_once(fake, capsys, monkeypatch):
    """`hs deploy kvmagent kvm1 h1`: it was refused as "target names must be unique", words of the deployer's."""
    asked: list[list[str]] = []

    def deploy(agent: str, targets: list[Any], url: str, **options: Any) -> dict[str, Result]:
        asked.append([t.name for t in targets])
        return {t.name: Result(host=t.name, message=f"{t.name}: deployed") for t in targets}

    monkeypatch.setattr(deployer, "deploy", deploy)
    assert hs(fake, capsys, "deploy", "kvmagent", "kvm1", "h1", "kvm1", "--password", "pw") == (0, "kvm1: deployed\n",
                                                                                                 "")
    assert asked == [["kvm1"]]


def test_ctrl_c_of_hs_deploy_ends_a_deploy_that_waits_at_once_in_one_line(fake, capsys, monkeypatch):
    """Before, asyncio.run's handler only cancelled the main task: the deploy (here waiting, as for a host's lock or
    for its agent to connect) went on to its end, and hs then exited 130 without a word."""
    from deployer.engine import DEPLOY_INTERRUPTED

    def deploy(agent: str, targets: list[Any], url: str, **options: Any) -> dict[str, Result]:
        time.sleep(5)
        return {t.name: Result(host=t.name, message=f"{t.name}: deployed") for t in targets}

    monkeypatch.setattr(deployer, "deploy", deploy)
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (see the test above)
    try:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        code, out, err = hs(fake, capsys, "deploy", "kvmagent", "kvm1", "--password", "pw")
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert (code, out, err) == (130, "", f"hs: {DEPLOY_INTERRUPTED}\n") and time.monotonic() - t0 < 3


def test_monurls_the_cli_cannot_parse_are_left_to_the_coordinator(fake, capsys, monkeypatch):
    monkeypatch.setattr(ceph, "scan", None)  # never called
    assert hs(fake, capsys, "ceph", "add-backup-storage", "bs1", "--mon-url", "10.0.0.9", "--wait", "5")[0] == 0
    assert fake.requests[-1] == ("POST", "/v1/ceph-backup-storage", {"wait": "5.0"}, {
        "name": "bs1", "mon_urls": "10.0.0.9", "zone": "default"})
