"""The control node's files and the install plan: render apart from apply, one probe for an unchanged node."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from agentkit import pki as agentpki
from coordinator.ctl import deployment, etcdauth, install, layout, node, schedule
from coordinator.ctl import main as ctl_main
from coordinator.ctl import pki as node_pki
from coordinator.ctl.errors import CtlError
from coordinator.ctl.main import parser
from coordinator.ctl.settings import CtlSettings
from deployer import tasks, wheelhouse
from deployer.deploy import DeploySettings
from deployer.wheelhouse import Bundle

SECRETS = {"admin_token": "a" * 43, "reader_token": "g" * 43, "metrics_token": "m" * 43, "secret_key": "k" * 44,
           "etcd_password": "e" * 43, "etcd_root_password": "r" * 43}
OPTIONS = node.NodeOptions(address="198.18.0.2")
BUNDLE = Bundle(Path("/cache/wheelhouse.tar"), "d" * 64, "0.1.0")
RELEASE = install.Release(BUNDLE, Path("/cache/source.tar"), "s" * 64)


def test_etcd_runs_for_production():
    cfg = node.etcd_config(OPTIONS)
    assert cfg["data-dir"] == str(layout.ETCD_DATA) and cfg["name"] == "hoststack"
    assert (cfg["auto-compaction-mode"], cfg["auto-compaction-retention"]) == ("periodic", "1h")
    assert cfg["quota-backend-bytes"] == 8 << 30 and cfg["enable-v2"] is False
    assert cfg["listen-client-urls"] == "http://127.0.0.1:2379" and "client-transport-security" not in cfg


def test_certificates_turn_on_tls_for_etcd_and_its_client():
    pki = tuple((name, f"PEM {name}") for name in ("ca.pem", "etcd-server.pem", "etcd-server-key.pem"))
    o = node.NodeOptions(address="198.18.0.2", pki=pki)
    cfg = node.etcd_config(o)
    assert cfg["listen-client-urls"] == "https://127.0.0.1:2379"
    assert cfg["client-transport-security"] == {
        "cert-file": f"{layout.PKI}/etcd-server.pem", "key-file": f"{layout.PKI}/etcd-server-key.pem",
        "trusted-ca-file": f"{layout.PKI}/ca.pem", "client-cert-auth": True}
    coordinator = node.coordinator_config(o, SECRETS)
    assert coordinator["etcd"] == "https://127.0.0.1:2379"
    assert coordinator["etcd_cert"] == f"{layout.PKI}/etcd-client.pem"
    r = node.render_node(o, SECRETS, systemd=True)
    key = r.file(layout.PKI / "etcd-server-key.pem")
    assert (key.content, key.mode, key.group) == ("PEM etcd-server-key.pem", 0o640, "etcd")


def test_the_coordinator_config_holds_the_secrets_and_tells_agents_where_it_is():
    r = node.render_node(OPTIONS, SECRETS, systemd=False)
    f = r.file(layout.COORDINATOR_CONFIG)
    assert f.mode == 0o600
    assert tomllib.loads(f.content) == {
        "etcd": "127.0.0.1:2379", "listen": "0.0.0.0", "port": 8740, "admin_token": "a" * 43, "secret_key": "k" * 44,
        "reader_token": "g" * 43, "metrics_token": "m" * 43,  # GETs only; scrapers' /metrics only
        "etcd_user": "hoststack", "etcd_password": "e" * 43,  # its own etcd user; etcd's root password is not here
        "deployer_config": str(layout.DEPLOYER_CONFIG), "coordinator_url_for_agents": "http://198.18.0.2:8740",
        "tls": {"plain_http": True}}  # without certificates (tests): nothing on the node serves TLS
    assert json.loads(r.file(layout.ETCD_CONFIG).content) == node.etcd_config(OPTIONS)


def test_the_nodes_deployer_builds_from_the_wheels_install_ships_and_asks_no_index():
    """The coordinator's automatic deploys build agent wheelhouses on the node, which may reach no index and
    has no compiler (libvirt-python is compiled): from the source tar's wheels alone."""
    r = node.render_node(OPTIONS, SECRETS, systemd=True)
    settings = DeploySettings(**tomllib.loads(r.file(layout.DEPLOYER_CONFIG).content))
    assert (settings.source_dir, settings.cache_dir) == (layout.SOURCE, layout.DEPLOYER_CACHE)
    assert settings.index().args() == ["--no-index", "--find-links", f"{layout.SOURCE}/{wheelhouse.OFFLINE}"]


def test_the_backup_schedule_is_a_timer_with_systemd_and_cron_without():
    with_systemd = node.render_node(OPTIONS, SECRETS, systemd=True)
    assert with_systemd.timers == ["hoststack-backup.timer"]
    assert str(layout.CRON_FILE) not in {f.path for f in with_systemd.files}
    without = node.render_node(OPTIONS, SECRETS, systemd=False)
    assert without.timers == [] and "hs-ctl backup --keep-amount 14" in without.file(layout.CRON_FILE).content
    assert "ExecStart=/usr/bin/etcd --config-file /etc/hoststack/etcd.json\n" in with_systemd.units["etcd"]
    assert "User=etcd\n" in with_systemd.units["etcd"] and "Type=notify\n" in with_systemd.units["etcd"]
    assert "setpriv --reuid=etcd" in without.units["etcd"]


def probe(stamp: dict | None = None, running: bool = True, missing: list[str] | None = None) -> dict:
    return {"stamp": stamp or {}, "systemd": False, "missing": missing or [],
            "running": {s.unit: running for s in node.SERVICES}, "secrets": dict(SECRETS)}


def applied(work: dict) -> dict:
    """The stamp a node has once it ran `work`."""
    stamp = {"wheels": BUNDLE.digest, "source": RELEASE.source_digest, "files": work[install.FILES.name]["digest"]}
    stamp.update({f"service {s['name']}": s["digest"] for s in work[install.SERVICES.name]["services"]})
    for s in work[install.SERVICES.name]["services"]:
        if "etcd_auth" in s:
            stamp[etcdauth.STAMP] = s["etcd_auth"]["digest"]
    return stamp


def test_a_fresh_node_gets_every_step_and_an_installed_one_none():
    fresh = install.plan(OPTIONS, RELEASE, probe(running=False, missing=["etcd-server"]), SECRETS)
    assert list(fresh) == [tasks.PACKAGES.name, tasks.UPLOAD, tasks.INSTALL.name, install.UPLOAD_SOURCE,
                           install.SOURCE.name, install.FILES.name, install.SERVICES.name]
    assert [(s["name"], s["restart"]) for s in fresh[install.SERVICES.name]["services"]] == [
        ("etcd", True), ("coordinator", True)]
    assert fresh[install.SERVICES.name]["disable"] == ["etcd.service"]
    assert install.plan(OPTIONS, RELEASE, probe(applied(fresh)), SECRETS) == {}


def test_a_new_release_restarts_the_coordinator_only_and_a_dead_service_is_started():
    stamp = applied(install.plan(OPTIONS, RELEASE, probe(running=False), SECRETS))
    newer = install.Release(Bundle(BUNDLE.tar, "e" * 64, "0.2.0"), RELEASE.source, "t" * 64)
    work = install.plan(OPTIONS, newer, probe(stamp), SECRETS)
    assert list(work) == [tasks.UPLOAD, tasks.INSTALL.name, install.UPLOAD_SOURCE, install.SOURCE.name,
                          install.SERVICES.name]
    assert [s["restart"] for s in work[install.SERVICES.name]["services"]] == [False, True]
    dead = install.plan(OPTIONS, RELEASE, {**probe(stamp), "running": {"hoststack-etcd.service": False,
                                                                     "hoststack-coordinator.service": True}}, SECRETS)
    assert [s["restart"] for s in dead[install.SERVICES.name]["services"]] == [True, False]


def test_a_second_install_with_another_schedule_has_systemd_reload_it_and_restarts_nothing():
    """systemd runs a timer's and its service's old text until reloaded: `--keep-amount 30` would still keep 14."""
    systemd = {**probe(running=False), "systemd": True}
    installed = {**probe(applied(install.plan(OPTIONS, RELEASE, systemd, SECRETS))), "systemd": True}
    assert install.plan(OPTIONS, RELEASE, installed, SECRETS) == {}
    work = install.plan(dataclasses.replace(OPTIONS, backup_keep=30), RELEASE, installed, SECRETS)
    assert list(work) == [install.FILES.name, install.SERVICES.name]
    assert work[install.SERVICES.name]["timers"] == {"enable": ["hoststack-backup.timer"]}
    assert [s["restart"] for s in work[install.SERVICES.name]["services"]] == [False, False]


def test_an_install_without_backups_on_a_systemd_node_stops_the_timer_before_its_units_go_then_changes_nothing():
    """As `hs-ctl backup-schedule --disable`: a timer whose files were only removed keeps firing (and its enabled
    link stays) until systemd is reloaded."""
    systemd = {**probe(running=False), "systemd": True}
    installed = {**probe(applied(install.plan(OPTIONS, RELEASE, systemd, SECRETS))), "systemd": True}
    none = dataclasses.replace(OPTIONS, backup_schedule=None)
    work = install.plan(none, RELEASE, installed, SECRETS)
    assert list(work) == [install.FILES.name, install.SERVICES.name]
    assert work[install.FILES.name]["remove"] == [str(layout.CRON_FILE)]  # the timer's units: once it stopped
    assert work[install.SERVICES.name]["timers"] == schedule.timer_off() == {
        "disable": ["hoststack-backup.timer"], "remove": ["/etc/systemd/system/hoststack-backup.service",
                                                         "/etc/systemd/system/hoststack-backup.timer"]}
    assert [s["restart"] for s in work[install.SERVICES.name]["services"]] == [False, False]
    assert install.plan(none, RELEASE, {**probe({**installed["stamp"], **applied(work)}), "systemd": True},
                        SECRETS) == {}
    cron = install.plan(none, RELEASE, probe(applied(install.plan(OPTIONS, RELEASE, probe(running=False), SECRETS))),
                        SECRETS)
    assert list(cron) == [install.FILES.name] and str(layout.CRON_FILE) in cron[install.FILES.name]["remove"]


def test_etcd_auth_is_turned_on_once_between_etcds_start_and_the_coordinators():
    r = node.render_node(OPTIONS, SECRETS, systemd=True)
    root = r.file(layout.ETCD_ROOT_CONFIG)
    assert (root.mode, root.group, tomllib.loads(root.content)) == (0o600, None, {
        "etcd_user": "root", "etcd_password": "r" * 43})  # root's file only: what hs-ctl logs in with
    assert "r" * 43 not in r.file(layout.COORDINATOR_CONFIG).content
    fresh = install.plan(OPTIONS, RELEASE, probe(running=False), SECRETS)
    etcd, coordinator = fresh[install.SERVICES.name]["services"]
    assert "etcd_auth" not in coordinator and {k: v for k, v in etcd["etcd_auth"].items() if k != "digest"} == {
        "endpoint": "http://127.0.0.1:2379", "root_password": "r" * 43, "user": "hoststack", "password": "e" * 43,
        "role": "hoststack", "prefix": "/hs/", "root_file": str(layout.ETCD_ROOT_CONFIG), "stamp": str(layout.STAMP)}
    # a node installed before etcd auth: the coordinator restarts with its etcd user, etcd is not restarted
    before = {k: v for k, v in applied(fresh).items() if k != etcdauth.STAMP}
    before["service coordinator"] = "older"
    work = install.plan(OPTIONS, RELEASE, probe(before), SECRETS)
    assert list(work) == [install.SERVICES.name]
    assert [(s["restart"], "etcd_auth" in s) for s in work[install.SERVICES.name]["services"]] == [
        (False, True), (True, False)]
    tls = node.NodeOptions(address="198.18.0.2", pki=(("ca.pem", "PEM"),))
    auth = install.plan(tls, RELEASE, probe(), SECRETS)[install.SERVICES.name]["services"][0]["etcd_auth"]
    assert (auth["endpoint"], auth["cacert"], auth["cert"]) == (
        "https://127.0.0.1:2379", f"{layout.PKI}/ca.pem", f"{layout.PKI}/etcd-client.pem")


def test_etcds_passwords_are_made_once_and_kept():
    made = install.kept_secrets({"secrets": {"admin_token": "a", "etcd_password": None}})
    assert len(made["etcd_password"]) == len(made["etcd_root_password"]) == 43
    assert made["etcd_password"] != made["etcd_root_password"]
    assert install.kept_secrets({"secrets": made}) == made


PROXY = {**SECRETS, "proxy_uuid": "p" * 32, "proxy_token": "t" * 43}


def test_the_console_proxy_comes_once_the_coordinator_registered_it():
    before = node.render_node(OPTIONS, SECRETS, systemd=True)
    assert list(before.units) == ["etcd", "coordinator"]
    assert str(layout.CONSOLEPROXY_CONFIG) not in {f.path for f in before.files}
    after = node.render_node(OPTIONS, PROXY, systemd=True)
    assert list(after.units) == ["etcd", "coordinator", "consoleproxy"]
    f = after.file(layout.CONSOLEPROXY_CONFIG)
    assert f.mode == 0o600 and tomllib.loads(f.content) == {
        "coordinator_url": "http://127.0.0.1:8740", "uuid": "p" * 32, "token": "t" * 43, "port": 8743,
        "metrics_token": "m" * 43,  # the coordinator's: a scraper's one credential opens both /metrics
        "tls": {"plain_http": True}}  # without certificates (tests): nothing on the node serves TLS
    unit = after.units["consoleproxy"]
    assert "ExecStart=/opt/hoststack/coordinator/current/bin/consoleproxy\n" in unit
    assert "After=network-online.target hoststack-coordinator.service\n" in unit
    assert node.proxy_host(OPTIONS) == {"name": "hoststack-consoleproxy", "address": "198.18.0.2",
                                        "kind": "consoleproxy"}
    assert {"novnc", "libjs-term.js", "spice-html5"} <= set(node.PACKAGES)


def test_a_registered_proxy_is_kept_and_follows_the_wheels():
    probed = {**probe(running=False), "secrets": {**PROXY, "secret_key": None}}
    kept = install.kept_secrets(probed)
    assert {k: kept[k] for k in ("admin_token", "proxy_uuid", "proxy_token")} == \
        {k: PROXY[k] for k in ("admin_token", "proxy_uuid", "proxy_token")} and kept["secret_key"]
    fresh = install.plan(OPTIONS, RELEASE, probe(running=False), PROXY)
    assert [s["name"] for s in fresh[install.SERVICES.name]["services"]] == ["etcd", "coordinator", "consoleproxy"]
    assert fresh[install.SERVICES.name]["services"][2]["ready"] == "http://127.0.0.1:8743/health"
    newer = install.Release(Bundle(BUNDLE.tar, "e" * 64, "0.2.0"), RELEASE.source, "t" * 64)
    work = install.plan(OPTIONS, newer, probe(applied(fresh)), PROXY)
    assert [s["restart"] for s in work[install.SERVICES.name]["services"]] == [False, True, True]
    assert install.plan(OPTIONS, RELEASE, probe(applied(fresh)), PROXY) == {}


def test_a_node_installed_without_reader_and_metrics_tokens_gets_them_on_its_next_install_then_keeps_them():
    before = {k: v for k, v in PROXY.items() if k not in ("reader_token", "metrics_token")}
    kept = install.kept_secrets({"secrets": {**before, "reader_token": None, "metrics_token": None}})
    assert {k: kept[k] for k in before} == before
    assert len(kept["reader_token"]) == len(kept["metrics_token"]) == 43
    assert len({kept["admin_token"], kept["reader_token"], kept["metrics_token"]}) == 3
    assert install.kept_secrets({"secrets": kept}) == kept
    work = install.plan(OPTIONS, RELEASE, probe(applied(install.plan(OPTIONS, RELEASE, probe(), PROXY))), kept)
    assert install.FILES.name in work  # the coordinator's and the proxy's configs, which read the new tokens
    assert [s["restart"] for s in work[install.SERVICES.name]["services"]] == [False, True, True]


def test_install_prints_the_admin_reader_and_metrics_tokens(monkeypatch):
    done = install.Installed(["files"], "a" * 43, "g" * 43, "m" * 43, "https://198.18.0.2:8740", "0.1.0")
    monkeypatch.setattr(deployment, "install", lambda *args: done)
    monkeypatch.setattr(deployment, "load_settings", DeploySettings)
    out = deployment.run(parser().parse_args(["install", "--address", "198.18.0.2"]), lambda a: None,
                         upgrade=False)
    assert out.splitlines()[-3:] == [f"admin token: {'a' * 43}", f"reader token: {'g' * 43}",
                                     f"metrics token: {'m' * 43}"]


@pytest.mark.parametrize("line", [["--keep-amount", "0"], ["--backup-schedule", "0 0 1 * 1"]])
def test_a_schedule_the_node_would_not_run_is_refused_before_anything_is_built(line: list[str]):
    argv = ["install", "--address", "198.18.0.2", *line]
    with pytest.raises(schedule.BadSchedule):
        deployment.options(parser().parse_args(argv))
    assert deployment.options(parser().parse_args([*argv, "--backup-schedule", "none"])).backup_schedule is None


@pytest.mark.parametrize("line", [["--host=-oProxyCommand=touch /tmp/x"], ["--host", "10.0.0.5;reboot"],
                                  ["--address", "node 1"], ["--host", "198.18.0.2", "--address=-x"]])
def test_a_node_address_that_is_no_host_is_refused_before_the_password_is_asked_for(line: list[str]):
    """ssh would read a --host `-oProxyCommand=…` as an option (and run its command here)."""
    def asked(a: object) -> str:
        raise AssertionError("the SSH password was asked for")

    with pytest.raises(CtlError, match=r"^--(host|address): '.*' is neither an IP address nor a DNS name$"):
        deployment.run(parser().parse_args(["install", *line]), asked, upgrade=False)


@pytest.mark.parametrize("line, said", [
    (["--file-root", "/srv/iso", "--file-root", "vm-disks"], "--file-root 'vm-disks': not an absolute directory"),
    (["--name", "cn 1"], "--name 'cn 1': letters, digits"),  # the proxy's host name: registering it failed
    (["--name", "n" * 51], f"--name '{'n' * 51}': letters, digits, '.', '_' and '-', at most 50"),
    (["--agent-url", "198.18.0.2:8740"], "--agent-url '198.18.0.2:8740': scheme '' is not https or http"),
    (["--agent-url", "https://lb .example:8740"], "--agent-url 'https://lb .example:8740': a URL has no whitespace"),
])
def test_node_options_the_node_could_not_run_are_refused_before_anything_is_built(line: list[str], said: str):
    """Each was written into the node's files and failed once its services started (a running node's
    coordinator then stopped on them)."""
    with pytest.raises(CtlError) as e:
        deployment.options(parser().parse_args(["install", "--address", "198.18.0.2", *line]))
    assert str(e.value).startswith(said)
    assert deployment.options(parser().parse_args(["install", "--address", "198.18.0.2", "--name", "n" * 50]))


def _tls_dir(path: Path) -> Path:
    """An operator's certificates for every role of the node, of their own CA (its key too)."""
    cert, key = agentpki.make_ca("Site CA")
    ca = agentpki.Issuer(cert, key)
    path.mkdir()
    (path / node_pki.CA_NAME).write_bytes(agentpki.pem([cert]))
    (path / node_pki.CA_KEY_NAME).write_bytes(agentpki.key_pem(key))
    for role in node_pki.ROLES:
        chain, leaf_key = ca.issue_pair(role, ("198.18.0.2", "127.0.0.1"), 30)
        (path / node_pki.cert_name(role)).write_bytes(agentpki.pem(chain))
        (path / node_pki.key_name(role)).write_bytes(agentpki.key_pem(leaf_key))
    return path


@pytest.mark.parametrize("damage, said", [
    (lambda d: (d / "ca.pem").write_text("not a certificate\n"), "ca.pem: not a readable PEM certificate"),
    (lambda d: (d / "ca-key.pem").write_bytes(b"\x30\x82\xff"), "ca-key.pem: not a readable unencrypted PEM key"),
    (lambda d: (d / "etcd-peer.pem").write_bytes(b"\x30\x82\x01\x0a\xff"),
     "etcd-peer.pem with etcd-peer-key.pem: not a readable PEM certificate and key"),
    (lambda d: (d / "coordinator-key.pem").write_bytes((d / "etcd-client-key.pem").read_bytes()),
     "coordinator.pem with coordinator-key.pem: the key is not the certificate's"),
])
def test_tls_files_that_are_not_what_their_names_say_are_refused_before_anything_is_built(tmp_path: Path, damage,  # noqa: ANN001
                                                                                        said: str):
    """Laid out as given, the node's etcd and coordinator failed on them (a binary file was a traceback)."""
    argv = ["install", "--address", "198.18.0.2", "--tls-dir", str(_tls_dir(tmp_path / "tls"))]
    assert dict(deployment.options(parser().parse_args(argv)).pki).keys() == set(node_pki.names())
    damage(tmp_path / "tls")
    with pytest.raises(CtlError) as e:
        deployment.options(parser().parse_args(argv))
    assert str(e.value).startswith(f"--tls-dir {tmp_path / 'tls'}: {said}")


def test_a_tls_dir_that_is_not_there_is_said_to_be_missing_not_each_of_its_files(tmp_path: Path):
    with pytest.raises(CtlError, match=f"^--tls-dir {tmp_path}/gone: no such directory$"):
        deployment.options(parser().parse_args(["install", "--address", "198.18.0.2", "--tls-dir", f"{tmp_path}/gone"]))


def test_the_backup_timer_install_writes_lets_it_write_where_the_nodes_hs_ctl_puts_and_copies_backups():
    """A node whose hs-ctl settings name another backup_dir and a backup_copy_to: the unit install wrote (the
    default directory, no copy's) left the scheduled backups read-only there under ProtectSystem."""
    elsewhere = dataclasses.replace(OPTIONS, backup_dir=Path("/srv/backups"), backup_copy_to=Path("/mnt/offsite"))
    r = node.render_node(elsewhere, SECRETS, systemd=True)
    service = r.file(schedule.SERVICE_PATH).content
    assert "ReadWritePaths=/srv/backups\nReadWritePaths=-/mnt/offsite\n" in service
    assert str(layout.BACKUP_DIR) not in service
    # the very unit `hs-ctl backup-schedule` writes for the same settings (main.cmd_schedule)
    job = schedule.Job(OPTIONS.backup_schedule or "", OPTIONS.backup_keep, Path("/srv/backups"), Path("/mnt/offsite"))
    assert {p: r.file(p).content for p in schedule.systemd_units(job)} == schedule.systemd_units(job)
    # the unit's backup directory is made as backup-schedule makes it; the copy's never (a disk not mounted)
    assert [(d.path, d.mode) for d in r.dirs if "backups" in d.path or "offsite" in d.path] == [("/srv/backups", 0o700)]


def test_install_writes_the_timer_after_the_hs_ctl_settings_its_probe_read_on_the_node():
    found = {**probe(), "systemd": True,
             "ctl": {"backup_dir": ["/srv/old", "/etc/hoststack/ctl.toml"],
                     "backup_copy_to": ["/mnt/offsite", "/etc/hoststack/ctl.d/site.toml"]}}
    o = install.with_ctl_settings(OPTIONS, found, None, "198.18.0.2")
    assert (o.backup_dir, o.backup_copy_to) == (Path("/srv/old"), Path("/mnt/offsite"))
    files = install.plan(o, RELEASE, found, SECRETS)[install.FILES.name]["files"]
    service = next(f["content"] for f in files if f["path"] == schedule.SERVICE_PATH)
    assert "ReadWritePaths=/srv/old\nReadWritePaths=-/mnt/offsite\n" in service
    # none read (no file, or neither key): the defaults, as hs-ctl runs on them
    assert install.with_ctl_settings(OPTIONS, {**probe(), "ctl": {}}, None, "198.18.0.2") == OPTIONS
    # this machine: its own settings, not the probe's
    mine = CtlSettings(backup_dir=Path("/srv/here"))
    assert install.with_ctl_settings(OPTIONS, found, mine, "this machine").backup_dir == Path("/srv/here")


@pytest.mark.parametrize(("ctl", "said"), [
    ({"backup_dir": ["backups", "/etc/hoststack/ctl.toml"]},
     "config backup_dir='backups' from /etc/hoststack/ctl.toml: must be an absolute path"),
    ({"backup_copy_to": [5, "/etc/hoststack/ctl.d/site.toml"]},
     "config backup_copy_to=5 from /etc/hoststack/ctl.d/site.toml: not a string"),
])
def test_a_node_setting_hs_ctl_would_refuse_is_named_before_anything_changes(ctl: dict, said: str):
    with pytest.raises(install.InstallFailed) as e:
        install.with_ctl_settings(OPTIONS, {**probe(), "ctl": ctl}, None, "198.18.0.2")
    assert str(e.value).startswith(f"198.18.0.2: hs-ctl's settings: {said}")


def test_install_on_this_machine_takes_hs_ctls_settings_as_backup_schedule_does(tmp_path: Path, monkeypatch):
    """Where the node is this machine its settings are hs-ctl's own (--config, $HS_CTL_*); elsewhere the probe's."""
    given: list[object] = []
    done = install.Installed([], "a", "g", "m", "https://198.18.0.2:8740", "0.1.0")
    monkeypatch.setattr(deployment, "install", lambda *args: given.append(args[-1]) or done)
    monkeypatch.setattr(deployment, "load_settings", DeploySettings)
    monkeypatch.setattr(deployment, "host_keys", lambda a, settings: ())
    monkeypatch.setattr(ctl_main, "_logs", lambda s: None)
    monkeypatch.setenv("HS_CTL_SSH_PASSWORD", "pw")
    (tmp_path / "ctl.toml").write_text('backup_dir = "/srv/backups"\nbackup_copy_to = "/mnt/offsite"\n')
    ctl_main.main(["--config", str(tmp_path / "ctl.toml"), "install", "--address", "198.18.0.2"])
    ctl_main.main(["--config", str(tmp_path / "ctl.toml"), "install", "--host", "198.18.0.9"])
    assert given == [CtlSettings(backup_dir=Path("/srv/backups"), backup_copy_to=Path("/mnt/offsite")), None]
