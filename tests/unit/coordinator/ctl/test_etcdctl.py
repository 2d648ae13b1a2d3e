"""etcdctl's command line and environment from the coordinator's etcd settings (not run: no subprocess here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.ctl.etcdctl import Etcdctl, login, txn_put
from coordinator.etcd.endpoints import EtcdConfig, TlsFiles


def test_tls_files_are_flags_and_each_member_keeps_its_scheme():
    tls = TlsFiles(Path("/pki/ca.pem"), Path("/pki/etcd-client.pem"), Path("/pki/etcd-client-key.pem"))
    ctl = Etcdctl.of(EtcdConfig.of("10.0.0.1:2379,http://10.0.0.2:2379", tls=tls, attempt_timeout=1.5), "/bin/etcdctl")
    assert [str(m) for m in ctl.members] == ["https://10.0.0.1:2379", "http://10.0.0.2:2379"]
    assert ctl.argv(ctl.members[:1], "snapshot", "save", "/b/x") == [
        "/bin/etcdctl", "--endpoints=https://10.0.0.1:2379", "--dial-timeout=1.5s", "--cacert=/pki/ca.pem",
        "--cert=/pki/etcd-client.pem", "--key=/pki/etcd-client-key.pem", "snapshot", "save", "/b/x"]


def test_the_password_goes_in_the_environment_and_the_callers_etcdctl_settings_stay_out(
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ETCDCTL_ENDPOINTS", "http://elsewhere:2379")
    monkeypatch.setenv("ETCDCTL_API", "2")
    ctl = Etcdctl.of(EtcdConfig.of("127.0.0.1:2379", user="root", password="s3cret"))
    env = ctl.env()
    assert {k: v for k, v in env.items() if k.startswith("ETCDCTL_")} == {
        "ETCDCTL_API": "3", "ETCDCTL_USER": "root", "ETCDCTL_PASSWORD": "s3cret"}
    assert env["PATH"] and not any("s3cret" in a for a in ctl.argv(ctl.members, "put", "/hs/backup", "{}"))


def test_without_a_user_no_credentials_are_passed():
    env = Etcdctl.of(EtcdConfig.of("127.0.0.1:2379")).env()
    assert "ETCDCTL_USER" not in env and "ETCDCTL_PASSWORD" not in env


def test_etcdctl_runs_on_one_go_processor(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GOMAXPROCS", "8")
    assert Etcdctl.of(EtcdConfig.of("127.0.0.1:2379")).env()["GOMAXPROCS"] == "1"


def test_a_record_is_one_unconditional_put_in_etcdctl_txns_input():
    """Key and value quoted as Go reads them (the real etcdctl reads them back: functional test_backup);
    `--` so that a value like a flag stays a value."""
    assert txn_put("/hs/backup", 'say "hi" \\ nœud') == '\nput -- "/hs/backup" "say \\"hi\\" \\\\ nœud"\n\n\n'


def test_a_refused_login_names_the_user_hs_ctl_logged_in_as():
    """The root user of etcd-root.toml, or the coordinator's: the operator must know whose password to check."""
    refused = "127.0.0.1:2379: Error: etcdserver: authentication failed, invalid user ID or password"
    assert login(EtcdConfig.of("127.0.0.1:2379", user="root", password="x"), refused) == " (as etcd user root)"
    assert login(EtcdConfig.of("127.0.0.1:2379", user="hoststack", password="x"),
                 "Error: etcdserver: permission denied") == " (as etcd user hoststack)"  # snapshots need root
    assert login(EtcdConfig.of("127.0.0.1:2379", user="root", password="x"), "context deadline exceeded") == ""
    assert login(EtcdConfig.of("127.0.0.1:2379"), refused) == ""
