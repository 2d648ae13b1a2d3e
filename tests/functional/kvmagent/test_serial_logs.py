"""Serial console logs are bounded (issue 13, finding 7): a guest that writes its console as fast as it can
fills at most `serial_log_max_bytes` in `<vm>.log` plus the part before in `<vm>.log.1`, the log keeps
showing what the guest writes now, and the logs go with the VM."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

pytestmark = pytest.mark.real
CAP = 64 * 1024


async def test_a_guest_flooding_its_console_fills_a_bounded_log(lab, make_agent):
    agent = await make_agent(serial_log_max_bytes=CAP, serial_log_check_interval=0.25)
    uuid = "5e71a100-0000-4000-8000-00000000f100"
    await agent.apply(lab.vm(uuid, action="flood"))
    log, older = lab.host.vm_dir / f"{uuid}.log", lab.host.vm_dir / f"{uuid}.log.1"
    biggest, written, t0 = 0, 0, time.monotonic()
    while written < 40 * CAP:  # the guest wrote 40 times the cap
        assert time.monotonic() - t0 < 240, f"the guest wrote only {written} bytes"
        await asyncio.sleep(0.05)
        size = log.stat().st_size if log.exists() else 0
        biggest = max(biggest, size)
        counters = re.findall(r"HS-FLOOD (\d+) ", lab.serial(uuid)[-4096:])
        written = max(written, int(counters[-1]) * 90 if counters else 0)
    overshoot = written / (time.monotonic() - t0) * 0.25  # what the guest writes in one check interval
    bound = CAP + 4 * overshoot + 8192
    assert biggest <= bound, (biggest, overshoot)
    # the rotated log is bounded alike (not by `biggest`: it may have grown after the last sample here)
    assert older.exists() and older.stat().st_size <= bound, (older.stat().st_size, overshoot)

    def latest() -> int:
        """The guest's last counter in the logs (a log just cut may not hold a whole line yet: the one before
        it does)."""
        text = "".join(p.read_text(errors="replace") for p in (older, log) if p.exists())
        return int(re.findall(r"HS-FLOOD (\d+) ", text)[-1])

    count = latest()
    await asyncio.sleep(0.5)
    assert latest() > count  # still written, still readable
    await agent.apply()
    assert not log.exists() and not older.exists()
