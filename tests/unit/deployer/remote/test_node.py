"""deployer.remote.node without a control node: its commands faked, its files in a temporary directory."""

from __future__ import annotations

import http.server
import io
import json
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from deployer import wheelhouse
from deployer.remote import host, node
from tests.unit.deployer.remote.test_host import done


def _source_tar(tmp_path: Path) -> tuple[Path, str]:
    """The controller's source tar (hs-ctl install uploads it), as wheelhouse.source_tar builds it."""
    src = tmp_path / "src"
    (src / "agentkit" / "sub").mkdir(parents=True)
    (src / "pyproject.toml").write_text('[project]\nname = "hoststack"\n')
    (src / "agentkit" / "__init__.py").write_text("")
    (src / "agentkit" / "sub" / "m.py").write_text("A = 1\n" * 300_000)  # past any read buffer
    wheel = tmp_path / "dep-1-py3-none-any.whl"
    wheel.write_bytes(b"W")
    return wheelhouse.source_tar(src, tmp_path / "cache", [wheel])


def source_args(tmp_path: Path, tar: Path, digest: str) -> dict[str, str]:
    return {"base": str(tmp_path / "coordinator"), "tar": str(tar), "digest": digest, "stamp": str(tmp_path / "stamp")}


def test_source_unpacks_beside_the_venvs_and_switches_the_link(tmp_path):
    tar, digest = _source_tar(tmp_path)
    base = tmp_path / "coordinator"
    (base / "source-old").mkdir(parents=True)
    assert node.source(source_args(tmp_path, tar, digest)) == {"source": str(base / f"source-{digest[:20]}")}
    assert (base / "source" / "agentkit" / "sub" / "m.py").read_text() == "A = 1\n" * 300_000
    assert (base / "source" / "wheels" / "dep-1-py3-none-any.whl").read_bytes() == b"W"
    assert sorted(p.name for p in base.iterdir()) == ["source", f"source-{digest[:20]}"] and not tar.exists()
    assert json.loads((tmp_path / "stamp").read_text()) == {"source": digest}


def test_a_source_tar_rewritten_on_the_host_is_not_unpacked(tmp_path):
    """It lies in /var/tmp as the wheelhouse does, where a local user who made the file first owns it; before, it
    was unpacked unchecked, and a node's deployer built every agent it deploys from what it held."""
    tar, digest = _source_tar(tmp_path)
    data = bytearray(tar.read_bytes())
    data[data.index(b"A = 1")] = ord("B")
    tar.write_bytes(bytes(data))
    with pytest.raises(host.Fail, match=f"source {tar}: its digest .* is not the {digest[:16]} the deployer built"):
        node.source(source_args(tmp_path, tar, digest))
    assert not any((tmp_path / "coordinator").iterdir()) and not (tmp_path / "stamp").exists()


def test_a_source_tar_with_a_member_outside_its_directory_is_not_unpacked(tmp_path):
    tar = tmp_path / "src.tar"
    with tarfile.open(tar, "w") as t:
        for name in ("pyproject.toml", "../escape"):
            info = tarfile.TarInfo(name)
            t.addfile(info, io.BytesIO(b""))
    with pytest.raises(host.Fail, match="unexpected member '../escape'"):
        node.source(source_args(tmp_path, tar, "d" * 64))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "coordinator" / "source").exists()


def node_service(tmp_path: Path, name: str, restart: bool) -> dict[str, object]:
    return {"name": name, "unit": f"hoststack-{name}.service", "unit_path": str(tmp_path / f"{name}.service"),
            "supervisor": str(tmp_path / f"{name}.sh"), "pidfile": str(tmp_path / f"{name}.pid"),
            "log": str(tmp_path / f"{name}.log"), "content": f"[Unit] {name}\n", "restart": restart,
            "digest": f"d-{name}", "ready": f"http://127.0.0.1:1/{name}"}


def test_node_services_under_systemd_go_in_order_and_only_the_changed_restart(tmp_path, monkeypatch):
    calls, ready = [], []
    monkeypatch.setattr(host, "sh", lambda argv, env=None, timeout=900: calls.append(argv) or
                        done(argv, 3 if "is-active" in argv else 0))
    monkeypatch.setattr(node, "wait_ready", lambda url, timeout, ca=None: ready.append(url))
    a = {"systemd": True, "stamp": str(tmp_path / "stamp"), "disable": ["etcd.service"],
         "timers": {"enable": ["hoststack-backup.timer"]},
         "services": [node_service(tmp_path, "etcd", False), node_service(tmp_path, "coordinator", True)]}
    node.services(a)
    assert (tmp_path / "etcd.service").read_text() == "[Unit] etcd\n"
    assert calls == [
        ["systemctl", "daemon-reload"], ["systemctl", "disable", "--now", "--quiet", "etcd.service"],
        ["systemctl", "enable", "--quiet", "hoststack-etcd.service", "hoststack-coordinator.service"],
        ["systemctl", "is-active", "--quiet", "hoststack-etcd.service"],  # not running (rc 3): started
        ["systemctl", "start", "hoststack-etcd.service"], ["systemctl", "restart", "hoststack-coordinator.service"],
        ["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "--quiet", "hoststack-backup.timer"]]
    assert ready == ["http://127.0.0.1:1/etcd", "http://127.0.0.1:1/coordinator"]
    assert json.loads((tmp_path / "stamp").read_text()) == {"service etcd": "d-etcd",
                                                             "service coordinator": "d-coordinator"}


class FakeSystemd:
    """systemctl as far as timers go: the units enabled, those active, and those it has loaded (the unit files
    it read at its last reload, and whatever still runs)."""

    def __init__(self, unit_dir: Path) -> None:
        self.unit_dir, self.enabled, self.active = unit_dir, set(), set()
        self.loaded = self.files()

    def files(self) -> set[str]:
        return {p.name for p in self.unit_dir.iterdir()}

    def __call__(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        verb, *rest = argv[1:]
        names = {a for a in rest if not a.startswith("--")}
        if verb == "daemon-reload":
            self.loaded = self.files() | self.active
        elif verb == "enable":
            self.enabled |= names
            self.active |= names if "--now" in rest else set()
        elif verb == "disable":
            self.enabled -= names
            self.active -= names if "--now" in rest else set()
        return done(argv)


def test_a_timer_turned_off_is_stopped_and_disabled_and_systemd_forgets_its_units(tmp_path, monkeypatch):
    units = [tmp_path / "b.service", tmp_path / "b.timer"]
    for unit in units:
        unit.write_text("[Unit]\n")
    systemd = FakeSystemd(tmp_path)
    monkeypatch.setattr(host, "sh", systemd)
    node.timers({"enable": ["b.timer"]})
    assert systemd.enabled == systemd.active == {"b.timer"}
    off = {"disable": ["b.timer"], "remove": [str(u) for u in units]}
    for _ in range(2):  # again: nothing left to do, and no error
        node.timers(off)
        assert (systemd.enabled, systemd.active, systemd.loaded, systemd.files()) == (set(), set(), set(), set())


def test_etcd_auth_keeps_what_an_earlier_run_made_and_never_puts_a_password_in_argv(tmp_path, monkeypatch):
    calls = []

    def etcdctl(argv, env=None, timeout=900, stdin=None):
        calls.append((argv[1:], stdin))
        assert env["ETCDCTL_USER"] == "root" and env["ETCDCTL_PASSWORD"] == "rootpw"
        assert env["ETCDCTL_CACERT"] == "/pki/ca.pem" and "rootpw" not in argv and "pw" not in argv
        exists = argv[1:3] in (["user", "add"], ["role", "add"]) and argv[3] != "root"
        return done(argv, 1 if exists else 0, "", "Error: etcdserver: user name already exists" if exists else "")
    monkeypatch.setattr(host, "sh", etcdctl)
    node.etcd_auth({"endpoint": "https://127.0.0.1:2379", "root_password": "rootpw", "user": "hoststack",
                      "password": "pw", "role": "hoststack", "prefix": "/hs/", "cacert": "/pki/ca.pem",
                      "root_file": "/etc/hoststack/etcd-root.toml", "stamp": str(tmp_path / "stamp"),
                      "digest": "a1"})
    assert calls == [
        (["endpoint", "health"], None), (["user", "add", "root", "--interactive=false"], "rootpw\n"),
        (["role", "add", "hoststack"], None),  # there already: kept
        (["role", "grant-permission", "hoststack", "--prefix=true", "readwrite", "/hs/"], None),
        (["user", "add", "hoststack", "--interactive=false"], "pw\n"),  # there already: its password set
        (["user", "passwd", "hoststack", "--interactive=false"], "pw\n"),
        (["user", "grant-role", "hoststack", "hoststack"], None), (["auth", "enable"], None)]
    assert json.loads((tmp_path / "stamp").read_text()) == {"etcd auth": "a1"}


def test_etcd_auth_with_a_root_password_etcd_refuses_is_one_line(monkeypatch):
    monkeypatch.setattr(host, "sh", lambda argv, env=None, timeout=900, stdin=None: done(
        argv, 1, "", "Error: etcdserver: authentication failed, invalid user ID or password"))
    with pytest.raises(host.Fail, match=r"^etcd at https://127.0.0.1:2379 refuses the root password the node "
                                          r"keeps \(/etc/hoststack/etcd-root.toml\)$"):
        node.etcd_auth({"endpoint": "https://127.0.0.1:2379", "root_password": "old",
                          "root_file": "/etc/hoststack/etcd-root.toml"})


def test_node_files_make_directories_and_replace_files_whole(tmp_path):
    a = {"dirs": [{"path": str(tmp_path / "etc"), "mode": 0o750, "owner": None, "group": None}],
         "files": [{"path": str(tmp_path / "etc" / "c.toml"), "content": "x = 1\n", "mode": 0o600, "group": None}],
         "remove": [str(tmp_path / "old")], "stamp": str(tmp_path / "stamp"), "digest": "f1"}
    (tmp_path / "old").write_text("gone")
    node.files(a)
    assert (tmp_path / "etc").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "etc" / "c.toml").read_text() == "x = 1\n" and not (tmp_path / "old").exists()
    assert (tmp_path / "etc" / "c.toml").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "stamp").read_text()) == {"files": "f1"}


def test_the_node_probe_reads_the_kept_secrets(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "sh", lambda argv, env=None: done(argv, 0, "etcd-server installed\n"))
    monkeypatch.setattr(host.os.path, "isdir", lambda path: False)
    (tmp_path / "coordinator.toml").write_text('admin_token = "a1"\nport = 8740\n')
    (tmp_path / "consoleproxy.toml").write_text('uuid = "u1"\n')
    coordinator, proxy = str(tmp_path / "coordinator.toml"), str(tmp_path / "consoleproxy.toml")
    out = node.node_probe({"stamp": str(tmp_path / "stamp"), "packages": ["etcd-server"],
                             "secrets": {"admin_token": [coordinator, "admin_token"],
                                         "secret_key": [coordinator, "secret_key"], "proxy_uuid": [proxy, "uuid"],
                                         "proxy_token": [str(tmp_path / "absent.toml"), "token"]},
                             "services": [node_service(tmp_path, "etcd", False)]})
    assert out == {"stamp": {}, "missing": [], "systemd": False, "running": {"hoststack-etcd.service": False},
                   "secrets": {"admin_token": "a1", "secret_key": None, "proxy_uuid": "u1", "proxy_token": None}}


class _Coordinator(http.server.BaseHTTPRequestHandler):
    """The node's coordinator as `register` sees it: `hosts` registered already, every request recorded."""

    hosts: list[dict] = []
    calls: list[tuple[str, str, dict | None, str]] = []

    def _answer(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self.calls.append(("GET", self.path, None, self.headers["Authorization"]))
        self._answer(200, {"hosts": self.hosts})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(("POST", self.path, body, self.headers["Authorization"]))
        if self.headers["Authorization"] != "Bearer adm":
            self._answer(401, {"error": {"code": "unauthorized", "message": "no", "field": None}})
        elif self.path == "/v1/hosts":
            if any(h["name"] == body["name"] for h in self.hosts):
                self._answer(409, {"error": {"code": "exists", "message": "exists", "field": "name"}})
            else:
                self._answer(201, {"uuid": "u-new", "token": "t-new", **body})
        else:
            self._answer(200, {"token": "t-rotated", "rotated": True})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def coordinator():
    _Coordinator.hosts, _Coordinator.calls = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Coordinator)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_register_makes_the_host_and_answers_its_uuid_and_token(coordinator):
    host = {"name": "hoststack-consoleproxy", "address": "198.18.0.2", "kind": "consoleproxy"}
    assert node.register({"url": coordinator, "admin_token": "adm", "host": host}) == {"uuid": "u-new",
                                                                                          "token": "t-new"}
    assert _Coordinator.calls == [("POST", "/v1/hosts", host, "Bearer adm")]


def test_register_of_a_host_already_there_gets_it_a_new_token(coordinator):
    """An install that stopped after registering and before writing the token down: the record stays."""
    _Coordinator.hosts = [{"uuid": "u-other", "name": "kvm1"}, {"uuid": "u-old", "name": "hoststack-consoleproxy"}]
    host = {"name": "hoststack-consoleproxy", "address": "198.18.0.2", "kind": "consoleproxy"}
    assert node.register({"url": coordinator, "admin_token": "adm", "host": host}) == {"uuid": "u-old",
                                                                                          "token": "t-rotated"}
    assert [c[:2] for c in _Coordinator.calls] == [("POST", "/v1/hosts"), ("GET", "/v1/hosts"),
                                                    ("POST", "/v1/hosts/u-old/token")]


def test_register_refused_otherwise_is_one_line(coordinator):
    with pytest.raises(host.Fail, match=r"^registering x at http://127.0.0.1:\d+: 401"):
        node.register({"url": coordinator, "admin_token": "not-the-admin-token",
                         "host": {"name": "x", "address": "198.18.0.2", "kind": "consoleproxy"}})


def test_the_node_probe_reads_hs_ctls_backup_settings_as_its_scheduled_run_does(tmp_path, monkeypatch):
    """The file, then its drop-ins by name, each over those before; each value with the file that set it (the
    controller names it if hs-ctl would refuse it); other keys and files left alone."""
    monkeypatch.setattr(host, "sh", lambda argv, env=None: done(argv, 0, ""))
    config = tmp_path / "ctl.toml"
    config.write_text('backup_dir = "/srv/old"\nbackup_copy_to = "/mnt/a"\nlog_level = "INFO"\n')
    (tmp_path / "ctl.d").mkdir()
    (tmp_path / "ctl.d" / "20-site.toml").write_text('backup_copy_to = "/mnt/offsite"\n')
    (tmp_path / "ctl.d" / "10-disk.toml").write_text('backup_dir = "/srv/backups"\nbackup_copy_to = "/mnt/b"\n')
    (tmp_path / "ctl.d" / "30-notes.txt").write_text("not toml [")
    (tmp_path / "ctl.d" / "40-when.toml").write_text("backup_timeout = 1979-05-27\n")
    keys = ["backup_dir", "backup_copy_to"]
    out = node.node_probe({"stamp": str(tmp_path / "stamp"), "packages": [], "secrets": {}, "services": [],
                           "ctl": {"config": str(config), "keys": keys}})
    assert out["ctl"] == {"backup_dir": ["/srv/backups", str(tmp_path / "ctl.d" / "10-disk.toml")],
                          "backup_copy_to": ["/mnt/offsite", str(tmp_path / "ctl.d" / "20-site.toml")]}
    assert node.ctl_settings(tmp_path / "absent.toml", keys) == {}  # hs-ctl on its defaults
    (tmp_path / "ctl.d" / "50-when.toml").write_text("backup_dir = 1979-05-27\n")  # JSON carries it as its text
    assert node.ctl_settings(config, keys)["backup_dir"] == ["1979-05-27", str(tmp_path / "ctl.d" / "50-when.toml")]
    config.write_text("backup_dir = [\n")
    with pytest.raises(host.Fail, match=rf"^hs-ctl's settings {config}: "):
        node.ctl_settings(config, keys)
