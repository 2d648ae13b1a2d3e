"""hs-ctl's settings: a NamedTuple loaded without pydantic, env over file over the install's layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkit.configfile import ConfigError
from coordinator.ctl import layout
from coordinator.ctl.errors import ServiceFailed
from coordinator.ctl.settings import CtlSettings


def test_defaults_then_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in ("HS_CTL_BACKUP_DIR", "HS_CTL_BACKUP_COPY_TO", "HS_CTL_BACKUP_TIMEOUT", "HS_CTL_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    assert CtlSettings.load(tmp_path / "absent.toml") == CtlSettings()
    assert CtlSettings().backup_dir == layout.BACKUP_DIR and CtlSettings().backup_copy_to is None
    path = tmp_path / "ctl.toml"
    path.write_text('backup_dir = "/srv/backups"\nbackup_timeout = 60\nlog_level = "INFO"\n')
    got = CtlSettings.load(path)
    assert (got.backup_dir, got.backup_timeout, got.log_level) == (Path("/srv/backups"), 60.0, "INFO")
    monkeypatch.setenv("HS_CTL_BACKUP_TIMEOUT", "30.5")
    assert CtlSettings.load(path).backup_timeout == 30.5
    monkeypatch.setenv("HS_CTL_BACKUP_COPY_TO", "/mnt/offsite")
    assert CtlSettings.load(path).backup_copy_to == Path("/mnt/offsite")


@pytest.mark.parametrize("text, message", [
    ("backup_timeout = 0\n", r"^config backup_timeout=0 from .*ctl\.toml: must be greater than 0$"),
    ('ready_timeout = "later"\n', r"^config ready_timeout='later' from .*: could not convert string to float"),
    ("backup_dir = 5\n", r"^config backup_dir=5 from .*: not a string$"),
    ("backup_dir = [\n", r"ctl\.toml: "),
    ('backup_dir = "backups"\n', r"^config backup_dir='backups' from .*: must be an absolute path"),  # wherever run
    ('backup_copy_to = "offsite"\n', r"^config backup_copy_to='offsite' from .*: must be an absolute path"),
    ('etcd_root = "etcd-root.toml"\n', r"^config etcd_root='etcd-root.toml' from .*: must be an absolute path"),
])
def test_bad_values_name_the_parameter_the_value_and_the_source(tmp_path: Path, text: str, message: str):
    path = tmp_path / "ctl.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        CtlSettings.load(path)


def test_bad_etcd_settings_of_the_coordinator_are_one_clear_error(tmp_path: Path):
    path = tmp_path / "coordinator.toml"
    path.write_text('etcd_user = "hs"\n')
    with pytest.raises(ServiceFailed, match="^the coordinator's etcd settings: etcd user and password go together$"):
        CtlSettings(coordinator_config=path).etcd()


def test_hs_ctl_reaches_etcd_as_root_where_install_turned_etcd_auth_on(tmp_path: Path):
    coordinator, root = tmp_path / "coordinator.toml", tmp_path / "etcd-root.toml"
    coordinator.write_text('etcd = "https://127.0.0.1:2379"\netcd_user = "hoststack"\netcd_password = "c"\n')
    assert (CtlSettings(coordinator_config=coordinator, etcd_root=root).etcd().user) == "hoststack"
    root.write_text('etcd_user = "root"\netcd_password = "r"\n')
    got = CtlSettings(coordinator_config=coordinator, etcd_root=root).etcd()
    assert (got.endpoints, got.user, got.password) == (("https://127.0.0.1:2379",), "root", "r")
