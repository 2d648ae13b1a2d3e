"""`hs-ctl` entry point: one subcommand per operation; every expected failure is one `hs-ctl: …` line on
stderr and exit status 1. Modules load per command, so `hs-ctl backup` (a scheduled job) starts on the
standard library and runs etcdctl, and only install and upgrade load the deployer's ansible."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from agentkit.configfile import ConfigError
from agentkit.errors import HostStackError
from agentkit.pipes import emit
from agentkit.usage import Parser
from coordinator.ctl import backup, backupfile, layout
from coordinator.ctl.etcdctl import Etcdctl
from coordinator.ctl.settings import CtlSettings

NODE_SERVICES = ("etcd", "coordinator", "consoleproxy")  # node.SERVICES, without importing it


def port(text: str) -> int:
    """`--api-port`, `--ssh-port`: 1 to 65535, refused here rather than by the coordinator installed or by ssh."""
    if not (text.isascii() and text.isdecimal() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a TCP port, 1 to 65535")
    return int(text)


def _node_args(p: argparse.ArgumentParser) -> None:
    """Where the control node is and what it should be (install and upgrade)."""
    p.add_argument("--host", help="the node's address over SSH (default: this machine, no SSH)")
    p.add_argument("--ssh-port", type=port, default=22)
    p.add_argument("--user", default="root")
    p.add_argument("--key-file", help="SSH private key (else a password: $HS_CTL_SSH_PASSWORD, or asked)")
    p.add_argument("--ssh-host-key", action="append", metavar="KEY", help="the node's SSH public host key "
                   "('<type> <base64>', repeatable); default: the one it presents, fingerprint shown")
    p.add_argument("--address", help="the address agents and operators reach the node at (default: --host)")
    p.add_argument("--name", default="hoststack", help="etcd's member name")
    p.add_argument("--api-port", type=port, default=layout.API_PORT)
    p.add_argument("--agent-url", help="the coordinator URL written into agent configs (default https://ADDRESS:PORT)")
    p.add_argument("--tls-dir", type=Path, help=f"your own certificates to lay out in {layout.PKI} (ca.pem, and "
                   "<role>.pem/<role>-key.pem of etcd-server, etcd-peer, etcd-client, coordinator; ca-key.pem lets "
                   "the coordinator issue hosts theirs); default: install makes a CA and them, and renews them")
    p.add_argument("--file-root", action="append", default=[], metavar="DIR", help="a directory disk, ISO and "
                   "kernel paths of VMs may name (repeatable; default the coordinator's: /var/lib/hoststack)")
    p.add_argument("--backup-schedule", default=layout.BACKUP_SCHEDULE,
                   help="cron syntax; 'none' for no scheduled backups")
    p.add_argument("--keep-amount", type=int, default=layout.BACKUP_SCHEDULE_KEEP, help="scheduled backups kept")


def _services_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("services", nargs="*", metavar="SERVICE", help=" or ".join(NODE_SERVICES))


def _backup_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file-name", default=backupfile.DEFAULT_NAME, help="backup name (a prefix; the time follows)")
    p.add_argument("--keep-amount", type=int, default=backup.DEFAULT_KEEP,
                   help="backups of this name kept, newest first")
    p.add_argument("--copy-to", type=Path, metavar="DIR", help="then copy it, verified, into DIR (another "
                   "filesystem), keeping as many there (default: hs-ctl's backup_copy_to, if set)")


def _restore_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path)


def _schedule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schedule", default=layout.BACKUP_SCHEDULE, help="cron syntax (default %(default)r)")
    p.add_argument("--keep-amount", type=int, default=layout.BACKUP_SCHEDULE_KEEP)
    p.add_argument("--disable", action="store_true", help="no scheduled backups")


def _no_args(p: argparse.ArgumentParser) -> None:
    pass


SUBCOMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    ("install", "install or update a control node (etcd, coordinator, console proxy)", _node_args),
    ("upgrade", "back up the node's etcd, then install this release on it", _node_args),
    ("status", "the node's services, etcd, the coordinator, the newest backup", _no_args),
    ("start", "start the node's services (all, or those named)", _services_args),
    ("stop", "stop the node's services (all, or those named)", _services_args),
    ("restart", "restart the node's services (all, or those named)", _services_args),
    ("backup", "snapshot etcd into the backup directory, with its sha256", _backup_args),
    ("restore", "verify a backup, then restore etcd from it (the old data is kept)", _restore_args),
    ("backup-schedule", "scheduled backups: a systemd timer, or cron without systemd", _schedule_args),
)


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """hs-ctl's parser; with the `command` a line names (`_command`), only its arguments are declared: each
    argument costs argparse a formatter and a terminal-size lookup, ~2.5 ms for all of them, of a ~200 ms
    scheduled backup."""
    p = Parser(prog="hs-ctl", description="Operate a HostStack control node (docs/operations.md).")
    p.add_argument("--config", help=f"hs-ctl's settings (default $HS_CTL_CONFIG, else {layout.CTL_CONFIG})")
    sub = p.add_subparsers(dest="command", required=True)
    for name, summary, declare in SUBCOMMANDS:
        sp = sub.add_parser(name, help=summary)
        if command in (None, name):
            declare(sp)
    return p


def _command(argv: list[str]) -> str | None:
    """The subcommand `argv` names: its first word that is neither an option nor `--config`'s value."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def cmd_backup(s: CtlSettings, a: argparse.Namespace) -> str:
    if a.keep_amount < 1:
        raise backupfile.InvalidBackup("--keep-amount must be at least 1", field="keep_amount")
    b = backup.take_and_record(Etcdctl.of(s.etcd(), s.etcdctl), s.backup_dir, a.file_name, a.keep_amount,
                               s.backup_timeout, meanwhile=lambda: _logs(s))
    removed = f"; removed {len(b.removed)} older" if b.removed else ""
    done = f"backup {b.path} ({b.bytes} bytes, sha256 {b.sha256}) in {b.seconds:.2f} s{removed}"
    if (copy_to := a.copy_to or s.backup_copy_to) is None:
        return done
    from coordinator.ctl import backupcopy  # only now: a backup without a copy runs etcdctl as soon as before

    c = backupcopy.copy(b, copy_to, a.file_name, a.keep_amount, s.backup_timeout)
    there = f", removed {len(c.removed)} older there" if c.removed else ""
    return f"{done}; copied to {c.path}, verified{there}"


def cmd_restore(s: CtlSettings, a: argparse.Namespace) -> str:
    from coordinator.ctl import restore

    r = restore.restore(s, a.file)
    kept = f"; the previous data is kept in {r.previous}" if r.previous else ""
    return (f"restored {r.file} (revision {r.revision}, {r.keys} keys) into {r.data_dir} as timeline {r.timeline}; "
            f"etcd is up{kept}")


def cmd_services(s: CtlSettings, a: argparse.Namespace) -> str:
    from coordinator.ctl import services

    if a.command == "stop":
        services.stop(a.services)
    else:
        services.start(s, a.services, restart=a.command == "restart")
    return f"{a.command}: {', '.join(a.services or NODE_SERVICES)}"


def cmd_status(s: CtlSettings, a: argparse.Namespace) -> str:
    from coordinator.ctl import status

    return status.report(s)


def cmd_schedule(s: CtlSettings, a: argparse.Namespace) -> str:
    from coordinator.ctl import schedule, scheduling

    return scheduling.apply(None if a.disable else schedule.Job(a.schedule, a.keep_amount, s.backup_dir,
                                                                 s.backup_copy_to))


def cmd_install(s: CtlSettings, a: argparse.Namespace) -> str:
    from coordinator.ctl import deployment

    return deployment.run(a, _password, upgrade=a.command == "upgrade", ctl=s)


def _password(a: argparse.Namespace) -> str | None:
    if a.host is None or a.key_file:
        return None
    if pw := os.environ.get("HS_CTL_SSH_PASSWORD"):
        return pw
    import getpass

    return getpass.getpass(f"{a.user}@{a.host}'s password: ")


COMMANDS = {"backup": cmd_backup, "restore": cmd_restore, "start": cmd_services, "stop": cmd_services,
            "restart": cmd_services, "status": cmd_status, "backup-schedule": cmd_schedule, "install": cmd_install,
            "upgrade": cmd_install}


LOGS_LATER = {"backup"}  # sets up its logs once its snapshot runs: logging loads while etcdctl starts
QUICK_EXIT = {"backup"}  # a scheduled job with nothing to tear down once done (`_exit`)


def _logs(s: CtlSettings) -> None:
    from agentkit import logs

    logs.setup(s.log_level)


def _exit() -> NoReturn:
    """Exit without the interpreter's teardown of its modules and objects (~4 ms, 2% of a large cloud's
    backup): what the command wrote is synced, its etcdctls reaped, its thread ended; the output streams
    and the log handlers are flushed here."""
    sys.stdout.flush()
    sys.stderr.flush()
    if (logging := sys.modules.get("logging")) is not None:
        logging.shutdown()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    gc.freeze()  # what the imports made lives until exit: no collection (nor the one at exit) walks it again
    a = parser(_command(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    if a.config is not None and not os.path.exists(a.config):  # a misspelt name would run on the defaults
        sys.exit(f"hs-ctl: --config {a.config}: no such file")
    try:
        settings = CtlSettings.load(a.config)
    except ConfigError as e:
        sys.exit(f"hs-ctl: {e}")
    if a.command not in LOGS_LATER:
        _logs(settings)
    try:
        emit(COMMANDS[a.command](settings, a))
    except HostStackError as e:
        sys.exit(f"hs-ctl: {e}")
    except KeyboardInterrupt:
        sys.exit(130)
    if a.command in QUICK_EXIT and argv is None:  # a process of its own (not a caller's, as tests are)
        _exit()


if __name__ == "__main__":
    main()
