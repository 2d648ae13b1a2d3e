"""The console path against a real qemu (TCG) running the tiny guest, its consoles on unix sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed import guest_image
from testbed.consolelab import ConsoleLab
from testbed.qemuvm import QemuVm


@pytest.fixture(scope="module")
def vm(run):
    v = QemuVm(run, guest_image.build()).start()
    v.wait_serial(r"HS-SHELLS")
    yield v
    v.stop()


@pytest.fixture
async def lab(vm):
    lab = await ConsoleLab.start({k: vm.socket(k) for k in ("vnc", "spice", "serial")})
    yield lab
    await lab.close()


@pytest.fixture(scope="module")
def artefacts(run):
    """Files a person may want to look at after the run, kept (the run's own directory is removed, and
    the test bed's sweep removes what it finds under its root): `$HS_ARTEFACTS/<run>`."""
    d = Path(os.environ.get("HS_ARTEFACTS", "/tmp/hoststack-artefacts")) / run.prefix
    d.mkdir(parents=True, exist_ok=True)
    return d
