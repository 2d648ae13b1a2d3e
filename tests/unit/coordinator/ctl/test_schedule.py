"""Cron schedules as systemd calendars (both kinds of host run backups at the same times)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.ctl import layout, schedule


@pytest.mark.parametrize("cron, calendar", [
    ("30 0,12 * * *", "*-*-* 00,12:30:00"),  # the seed's
    ("*/15 * * * *", "*-*-* *:00,15,30,45:00"),
    ("0 3 * * 1-5", "Mon,Tue,Wed,Thu,Fri *-*-* 03:00:00"),
    ("0 4 * * 0,7", "Sun *-*-* 04:00:00"),
    ("5 1 1 */3 *", "*-01,04,07,10-01 01:05:00"),
    ("0 2 10-20/5 * *", "*-*-10,15,20 02:00:00"),
])
def test_cron_to_on_calendar(cron: str, calendar: str):
    assert schedule.calendar(cron) == calendar


@pytest.mark.parametrize("cron, message", [
    ("30 0,12 * *", "five fields"),
    ("61 * * * *", "outside 0-59"),
    ("0 0 1 * 1", "not both"),
    ("@daily", "five fields"),
    ("x * * * *", "use numbers"),
    ("*/0 * * * *", "a step of 0"),  # range() refused it with a traceback
    ("0 0 1-31/0 * *", "a step of 0"),
    ("5-1 * * * *", "from low to high"),  # said 'outside 0-59'
])
def test_schedules_cron_and_systemd_would_read_apart_are_refused(cron: str, message: str):
    with pytest.raises(schedule.BadSchedule, match=message):
        schedule.calendar(cron)


def test_the_job_backs_up_with_the_installed_hs_ctl_keeping_its_amount():
    job = schedule.Job("30 0,12 * * *", 14)
    assert schedule.cron_entry(job).endswith(f"30 0,12 * * * root {layout.HS_CTL} backup --keep-amount 14 >/dev/null\n")
    units = schedule.systemd_units(job)
    service = units[f"/etc/systemd/system/{schedule.SERVICE}"]
    assert f"ExecStart={layout.HS_CTL} backup --keep-amount 14\n" in service and "Type=oneshot\n" in service
    assert f"ReadWritePaths={layout.BACKUP_DIR}\n" in service
    timer = units[f"/etc/systemd/system/{schedule.TIMER}"]
    assert "OnCalendar=*-*-* 00,12:30:00\n" in timer and "Persistent=true\n" in timer


def test_the_timers_backups_may_go_where_hs_ctl_is_told_to_put_them():
    """A node whose ctl.toml names another backup_dir: the timer's runs could write only the default one."""
    service = schedule.systemd_units(schedule.Job(backup_dir=Path("/srv/backups")))[schedule.SERVICE_PATH]
    assert "ReadWritePaths=/srv/backups\n" in service and str(layout.BACKUP_DIR) not in service


@pytest.mark.parametrize("keep", [0, -1])
def test_a_schedule_that_keeps_no_backup_is_refused_when_set_not_at_each_run(keep: int):
    with pytest.raises(schedule.BadSchedule, match="at least 1 backup"):
        schedule.Job("30 0,12 * * *", keep)


def test_the_timers_copies_may_go_where_hs_ctl_copies_them_and_its_command_stays():
    """`backup_copy_to` in ctl.toml: hs-ctl reads it at each run; the sandbox must let it write there, and a
    destination not mounted (`-`) must not stop the unit and its backup on the node."""
    job = schedule.Job(copy_to=Path("/mnt/offsite"))
    service = schedule.systemd_units(job)[schedule.SERVICE_PATH]
    assert f"ReadWritePaths={layout.BACKUP_DIR}\nReadWritePaths=-/mnt/offsite\n" in service
    assert f"ExecStart={layout.HS_CTL} backup --keep-amount 14\n" in service
    assert schedule.cron_entry(job) == schedule.cron_entry(schedule.Job())
