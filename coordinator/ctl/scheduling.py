"""`hs-ctl backup-schedule` on the node: the backup timer (systemd) or cron entry (no systemd), or none.

The files are those install writes for the same choice (`schedule.py` renders both). The install's
stamp is left alone, so a later install with unchanged options keeps this schedule; one with other
options writes the schedule it was given.
"""

from __future__ import annotations

from coordinator.ctl import layout, schedule, services
from coordinator.ctl.errors import ServiceFailed
from deployer.remote import host as remote_host
from deployer.remote import node as remote_node


def apply(job: schedule.Job | None) -> str:
    systemd = services.systemd()
    units = schedule.systemd_units(job) if job and systemd else {}
    cron = schedule.cron_entry(job) if job and not systemd else None
    files = [{"path": p, "content": text, "mode": 0o644} for p, text in units.items()]
    if cron:
        files.append({"path": str(layout.CRON_FILE), "content": cron, "mode": 0o644})
    every = [*schedule.systemd_units(schedule.Job()), str(layout.CRON_FILE)]
    try:
        if systemd and not job:
            remote_node.timers(schedule.timer_off())
        dirs = [{"path": str(job.backup_dir), "mode": 0o700}] if job else []  # the timer's unit must find it
        remote_node.files({"dirs": dirs, "files": files, "remove": [p for p in every if p not in units and not
                                                            (cron and p == str(layout.CRON_FILE))]})
        if systemd and job:
            remote_node.timers({"enable": [schedule.TIMER]})
    except (remote_host.Fail, OSError) as e:
        raise ServiceFailed(f"backup schedule: {e}") from None
    if job is None:
        return "no scheduled backups"
    where = f"systemd timer {schedule.TIMER} ({schedule.calendar(job.cron)})" if systemd else \
        f"cron ({layout.CRON_FILE})"
    copied = f", copied to {job.copy_to}" if job.copy_to else ""
    return f"backups at {job.cron!r}, keeping {job.keep}{copied}: {where}"
