"""Scheduled backups: a cron schedule as a systemd timer, or as a cron entry where systemd does not run.

The schedule is written in cron's syntax (the seed's `30 0,12 * * *`: 00:30 and 12:30 every day) and
translated to systemd's `OnCalendar=` (`*-*-* 00,12:30:00`), so operators write one syntax on either
kind of host. Cron runs a job when day-of-month OR day-of-week matches, systemd when both do; a
schedule that restricts both is refused rather than run at other times than meant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from coordinator.ctl import layout
from coordinator.ctl.errors import CtlError
from deployer import render
from deployer.service import SANDBOX

DEFAULT, DEFAULT_KEEP = layout.BACKUP_SCHEDULE, layout.BACKUP_SCHEDULE_KEEP
NAME = "hoststack-backup"
SERVICE, TIMER = f"{NAME}.service", f"{NAME}.timer"
UNIT_DIR = "/etc/systemd/system"
SERVICE_PATH, TIMER_PATH = f"{UNIT_DIR}/{SERVICE}", f"{UNIT_DIR}/{TIMER}"
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ITEM = re.compile(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?")

SERVICE_UNIT = """\
[Unit]
Description=HostStack etcd backup (hs-ctl backup)
After=hoststack-etcd.service

[Service]
Type=oneshot
ExecStart={command}
{sandbox}"""
TIMER_UNIT = """\
[Unit]
Description=HostStack etcd backup on schedule (cron: {cron})

[Timer]
OnCalendar={calendar}
Persistent=true

[Install]
WantedBy=timers.target
"""
CRON = """\
# HostStack etcd backup, written by hs-ctl (change it with `hs-ctl backup-schedule`)
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
{cron} root {command} >/dev/null
"""


class BadSchedule(CtlError):
    code, status = "invalid_schedule", 400


@dataclass(frozen=True)
class Job:
    """A schedule refused when made, not at each run: `hs-ctl backup` refuses to keep no backup. `backup_dir` is
    where the backups go (hs-ctl's `backup_dir`) and `copy_to` where they are copied (its `backup_copy_to`): all
    the service leaves writable besides its private /tmp. The command stays the same: hs-ctl reads both itself."""

    cron: str = DEFAULT
    keep: int = DEFAULT_KEEP
    backup_dir: Path = layout.BACKUP_DIR
    copy_to: Path | None = None

    def __post_init__(self) -> None:
        calendar(self.cron)  # the same schedules on either kind of host
        if self.keep < 1:
            raise BadSchedule(f"--keep-amount {self.keep}: the schedule must keep at least 1 backup",
                              field="keep_amount")

    @property
    def command(self) -> str:
        return f"{layout.HS_CTL} backup --keep-amount {self.keep}"


def _values(text: str, name: str, lo: int, hi: int) -> list[int] | None:
    """The values of one cron field (None: every value)."""
    if text == "*":
        return None
    out: set[int] = set()
    for item in text.split(","):
        m = _ITEM.fullmatch(item)
        if not m:
            raise BadSchedule(f"schedule {name} {text!r}: use numbers, ranges a-b, lists and steps /n")
        start, end, step = m.groups()
        if step and int(step) == 0:
            raise BadSchedule(f"schedule {name} {text!r}: a step of 0 never moves on")
        first, last = (lo, hi) if start == "*" else (int(start), int(end) if end else int(start))
        if step and start != "*" and not end:
            last = hi
        if not lo <= first <= hi or not lo <= last <= hi:
            raise BadSchedule(f"schedule {name} {text!r}: outside {lo}-{hi}")
        if first > last:
            raise BadSchedule(f"schedule {name} {text!r}: a range goes from low to high")
        out.update(range(first, last + 1, int(step or 1)))
    return sorted(out)


def calendar(cron: str) -> str:
    """cron's five fields as systemd's OnCalendar."""
    parts = cron.split()
    if len(parts) != 5:
        raise BadSchedule(f"schedule {cron!r}: cron's five fields (minute hour day-of-month month day-of-week)")
    minute, hour, dom, month, dow = (_values(p, *f) for p, f in zip(parts, _FIELDS, strict=True))
    if dom is not None and dow is not None:
        raise BadSchedule(f"schedule {cron!r}: restrict the day of the month or of the week, not both")

    def join(values: list[int] | None, width: int = 2) -> str:
        return "*" if values is None else ",".join(f"{v:0{width}d}" for v in values)

    days = "" if dow is None else ",".join(dict.fromkeys(_DAYS[d] for d in dow)) + " "
    return f"{days}*-{join(month)}-{join(dom)} {join(hour)}:{join(minute)}:00"


def systemd_units(job: Job) -> dict[str, str]:
    """path -> text of the backup's oneshot service and its timer."""
    # `-`: a copy directory not there (a disk not mounted) fails the copy only, not the unit and its backup
    copy_to = (("ReadWritePaths", f"-{job.copy_to}"),) if job.copy_to else ()
    sandbox = render.directives((*SANDBOX, ("ReadWritePaths", str(job.backup_dir)), *copy_to))
    return {SERVICE_PATH: SERVICE_UNIT.format(command=job.command, sandbox=sandbox),
            TIMER_PATH: TIMER_UNIT.format(cron=job.cron, calendar=calendar(job.cron))}


def timer_off() -> dict[str, list[str]]:
    """The timers step (deployer.remote.node.timers) that ends the backup timer: stopped and disabled while its
    units are there, then the units removed and systemd reloaded, so it neither fires again nor leaves an
    enabled link behind."""
    return {"disable": [TIMER], "remove": [SERVICE_PATH, TIMER_PATH]}


def cron_entry(job: Job) -> str:
    return CRON.format(cron=job.cron, command=job.command)
