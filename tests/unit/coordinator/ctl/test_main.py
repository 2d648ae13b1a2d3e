"""hs-ctl's command line: a line parses the same whether one command's arguments are declared or all are."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.ctl import main as ctl_main
from coordinator.ctl import schedule
from coordinator.ctl.main import SUBCOMMANDS, _command, parser

LINES = [
    ["backup", "--keep-amount", "3", "--file-name", "nightly", "--copy-to", "/mnt/offsite"],
    ["--config", "backup", "status"],  # a settings file named like a command
    ["--config=/etc/x.toml", "restore", "/var/backups/a.db"],
    ["install", "--host", "198.18.0.9", "--ssh-host-key", "ssh-ed25519 AAAA", "--keep-amount", "5"],
    ["restart", "etcd", "coordinator"],
    ["backup-schedule", "--disable"],
]


@pytest.mark.parametrize("argv", LINES)
def test_a_line_parses_as_with_every_argument_declared(argv):
    assert vars(parser(_command(argv)).parse_args(argv)) == vars(parser().parse_args(argv))


def test_the_command_is_the_first_word_not_an_option_nor_the_config_file():
    assert [_command(argv) for argv in LINES] == ["backup", "status", "restore", "install", "restart",
                                                  "backup-schedule"]
    assert _command(["-h"]) is None and _command(["--config", "x"]) is None


@pytest.mark.parametrize("name", [name for name, _, _ in SUBCOMMANDS])
def test_a_command_s_help_lists_its_arguments(name, capsys):
    with pytest.raises(SystemExit):
        parser(_command([name, "--help"])).parse_args([name, "--help"])
    declared = capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser().parse_args([name, "--help"])
    assert declared == capsys.readouterr().out


def test_the_settings_are_the_option_s_file_else_hs_ctl_config_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    seen: list[Path] = []
    monkeypatch.setitem(ctl_main.COMMANDS, "status", lambda s, a: seen.append(s.backup_dir) or "")
    monkeypatch.setattr(ctl_main, "_logs", lambda s: None)
    for name in ("env", "option"):
        (tmp_path / f"{name}.toml").write_text(f'backup_dir = "/srv/from-{name}"\n')
    monkeypatch.setenv("HS_CTL_CONFIG", str(tmp_path / "env.toml"))
    ctl_main.main(["status"])
    ctl_main.main(["--config", str(tmp_path / "option.toml"), "status"])
    assert seen == [Path("/srv/from-env"), Path("/srv/from-option")]


@pytest.mark.parametrize("flag", ["--api-port", "--ssh-port"])
def test_a_port_is_one_to_65535_refused_naming_the_flag(flag, capsys):
    """--api-port 0 was written into the coordinator's settings, which refused it at the start after the install."""
    for bad in ("0", "65536", "-1", "ssh"):
        with pytest.raises(SystemExit):
            parser("install").parse_args(["install", flag, bad])
        assert f"argument {flag}: '{bad}': expected a TCP port, 1 to 65535" in capsys.readouterr().err
    assert getattr(parser("install").parse_args(["install", flag, "2222"]), flag[2:].replace("-", "_")) == 2222


@pytest.mark.parametrize("argv, said", [
    (["backup", "--keep-amount", "abc"], "hs-ctl backup: argument --keep-amount: invalid int value: 'abc'"),
    (["restore"], "hs-ctl restore: the following arguments are required: file"),
    ([], "hs-ctl: the following arguments are required: command"),
    (["status", "extra"], "hs-ctl: unrecognized arguments: extra"),
])
def test_a_usage_error_is_one_line_naming_the_argument_and_exits_1(argv, said, capsys):
    """As every other expected failure (docs/operations.md); argparse printed its usage and exited 2."""
    with pytest.raises(SystemExit) as e:
        ctl_main.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.splitlines() == [f"{said} (see {said.split(':')[0]} --help)"]


def test_a_settings_file_named_on_the_command_line_that_is_not_there_is_refused(tmp_path: Path, monkeypatch, capsys):
    """A misspelt --config ran the command on the defaults (the install's layout), silently."""
    ran: list[str] = []
    monkeypatch.setitem(ctl_main.COMMANDS, "status", lambda s, a: ran.append("status") or "")
    with pytest.raises(SystemExit) as e:
        ctl_main.main(["--config", str(tmp_path / "ctl.tmol"), "status"])
    assert str(e.value) == f"hs-ctl: --config {tmp_path}/ctl.tmol: no such file" and ran == []


def test_the_backup_schedule_writes_where_the_settings_put_backups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The timer's sandbox leaves only the backup directory writable: the one hs-ctl's settings name."""
    jobs: list[object] = []
    monkeypatch.setattr("coordinator.ctl.scheduling.apply", lambda job: jobs.append(job) or "")
    monkeypatch.setattr(ctl_main, "_logs", lambda s: None)
    (tmp_path / "ctl.toml").write_text('backup_dir = "/srv/backups"\nbackup_copy_to = "/mnt/offsite"\n')
    ctl_main.main(["--config", str(tmp_path / "ctl.toml"), "backup-schedule", "--keep-amount", "7"])
    assert jobs == [schedule.Job(keep=7, backup_dir=Path("/srv/backups"), copy_to=Path("/mnt/offsite"))]
