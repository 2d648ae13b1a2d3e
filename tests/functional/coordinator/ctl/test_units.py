"""Every systemd unit HostStack writes passes `systemd-analyze verify`, and the backup timer's calendar is
the cron schedule it was given.

The agents' units (deployer.AGENTS, so an agent added later is checked too), the control node's etcd,
coordinator and console proxy, the backup service and its timer. systemd-analyze verify wants each ExecStart program to
exist: the venv entry points are stand-ins on a tmpfs over /opt in a mount namespace of this test only.
PID 1 need not be systemd.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from coordinator.ctl import node, schedule
from deployer import AGENTS, render

pytestmark = pytest.mark.real


def units() -> dict[str, str]:
    """Path (agents/ or node/, then the unit's name) -> the unit: a control node's console proxy has a unit
    of the same name as a deployed one, running from the node's venv."""
    out = {f"agents/{spec.service.unit}": render.systemd_unit(spec.service) for spec in AGENTS.values()}
    out.update({f"node/{s.unit}": render.systemd_unit(s) for s in node.SERVICES})
    job = schedule.Job(copy_to=Path("/mnt/offsite"))  # its sandbox with both directories, the copy's optional
    out.update({f"node/{Path(p).name}": text for p, text in schedule.systemd_units(job).items()})
    return out


def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path):
    found = units()
    assert {"agents/hoststack-kvmagent.service", "agents/hoststack-cephagent.service",
            "agents/hoststack-consoleproxy.service", "agents/hoststack-imagestore.service",
            "node/hoststack-etcd.service", "node/hoststack-coordinator.service", "node/hoststack-consoleproxy.service",
            "node/hoststack-backup.service", "node/hoststack-backup.timer"} <= found.keys()
    for name, text in found.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    programs = sorted({line.split("=", 1)[1].split()[0] for text in found.values() for line in text.splitlines()
                       if line.startswith("ExecStart=")})
    stand_ins = [p for p in programs if p.startswith("/opt/")]
    script = ("mount -t tmpfs tmpfs /opt && for p in \"$@\"; do mkdir -p \"${p%/*}\" && printf '#!/bin/sh\\n' > \"$p\" "
              "&& chmod +x \"$p\"; done" + "".join(  # one run per directory: a run loads one unit of a name
                  f" && systemd-analyze verify {' '.join(str(tmp_path / n) for n in found if n.startswith(d))}"
                  for d in ("agents/", "node/")))
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *stand_ins],
                       capture_output=True, text=True, timeout=120, check=False)
    assert (p.returncode, p.stdout + p.stderr) == (0, "")


def test_the_backup_timer_runs_at_the_cron_schedule():
    timer = schedule.systemd_units(schedule.Job())[f"{schedule.UNIT_DIR}/{schedule.TIMER}"]
    calendar = next(line.split("=", 1)[1] for line in timer.splitlines() if line.startswith("OnCalendar="))
    p = subprocess.run(["systemd-analyze", "calendar", "--iterations=3", "--base-time=2027-01-01 06:00:00 UTC",
                        f"{calendar} UTC"], capture_output=True, text=True, check=True, timeout=30)
    runs = [line.split(": ", 1)[1] for line in p.stdout.splitlines() if "Next elapse:" in line or "Iter. #" in line]
    assert runs == ["Fri 2027-01-01 12:30:00 UTC", "Sat 2027-01-02 00:30:00 UTC", "Sat 2027-01-02 12:30:00 UTC"]
