"""`hs-ctl status` says why a part cannot be asked and goes on with the others."""

from __future__ import annotations

from pathlib import Path

from coordinator.ctl import status
from coordinator.ctl.settings import CtlSettings


def test_a_coordinator_whose_settings_cannot_be_read_is_reported_not_raised(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("HS_COORDINATOR_ADMIN_TOKEN", raising=False)
    config = tmp_path / "coordinator.toml"
    config.write_text('etcd = "https://127.0.0.1:2379"\n')  # its etcd settings only: no admin token, no TLS
    said = status._coordinator(CtlSettings(coordinator_config=config))
    assert said.startswith("cannot ask it: the coordinator's settings:") and "admin_token" in said


def test_an_etcd_that_does_not_answer_in_time_is_reported_as_such(monkeypatch):
    async def silent(_: CtlSettings) -> list[str]:
        raise TimeoutError  # what wait_for raises once its 15 s are up: no message of its own

    monkeypatch.setattr(status, "_etcd", silent)
    monkeypatch.setattr(status.services, "running", lambda _: True)
    monkeypatch.setattr(status, "_coordinator", lambda _: "ok")
    monkeypatch.setattr(status, "_schedule", lambda: "scheduled backups: none")
    assert "etcd: cannot ask it: no answer in 15 s" in status.report(CtlSettings()).splitlines()


def test_etcd_tls_files_that_cannot_be_read_are_reported_and_the_rest_still_shown(tmp_path: Path, monkeypatch):
    config = tmp_path / "coordinator.toml"
    config.write_text(f'etcd = "https://127.0.0.1:2379"\netcd_ca = "{tmp_path}/gone/ca.pem"\n'
                      f'etcd_cert = "{tmp_path}/gone/client.pem"\netcd_key = "{tmp_path}/gone/client-key.pem"\n')
    monkeypatch.setattr(status.services, "running", lambda _: True)
    monkeypatch.setattr(status, "_coordinator", lambda _: "ok")
    monkeypatch.setattr(status, "_schedule", lambda: "scheduled backups: none")
    lines = status.report(CtlSettings(coordinator_config=config, etcd_root=tmp_path / "none.toml")).splitlines()
    assert f"etcd: cannot ask it: [Errno 2] No such file or directory: '{tmp_path}/gone/ca.pem'" in lines
    assert lines[-1] == "scheduled backups: none"
