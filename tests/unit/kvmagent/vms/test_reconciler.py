"""The facade without libvirtd: desired state is kept and applied once libvirt answers."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentkit.model import FileDisk, VmSpec, VmState, VolumeSpec
from kvmagent.domain_xml import DomainMeta, domain_uuid
from kvmagent.errors import DriverError, NoDomain, NotListed
from kvmagent.libvirt_driver import DomainInfo, LibvirtDriver
from kvmagent.vms import VmReconciler, VmSettings


class NoBridges:
    failed: dict = {}


async def test_apply_while_libvirtd_is_away_is_deferred_to_the_reconnect_resync():
    rec = VmReconciler(LibvirtDriver("test:///default"), NoBridges(),
                       VmSettings(domain_type="qemu", volume_dir="/vols"), lambda kind, ident, body: None)
    spec = VmSpec(uuid="aaaaaaaa-0000-4000-8000-000000000001", name="v",
                  volumes=[VolumeSpec(uuid="r", role="root", disk=FileDisk(path="v/r.qcow2"))])
    await rec.apply({spec.uuid: spec}, {}, {}, {})  # not connected: logged, not raised
    assert rec.ledger.desired[spec.uuid].volumes[0].disk.path == "/vols/v/r.qcow2"
    assert rec.ledger.ours(spec.uuid) and not rec.ledger.ours("other")
    with pytest.raises(DriverError, match="not connected"):
        await rec.resync()  # what the reconnect hook runs: it fails loudly while libvirtd is away
    await rec.close()


class FailingDestroy(LibvirtDriver):
    """One domain of ours, no longer wanted; libvirt refuses to destroy it `failures` times (no connection)."""

    def __init__(self, failures: int) -> None:
        super().__init__("test:///default")
        self.failures = failures
        self.destroys: list[float] = []
        self.info: DomainInfo | None = DomainInfo(domain_uuid(GONE), GONE, VmState.RUNNING,
                                                  DomainMeta(GONE, taps="hstdead0001").to_xml())

    async def list_domains(self, ns: str) -> list[DomainInfo]:
        return [self.info] if self.info else []

    async def domain_info(self, uuid: str, ns: str) -> DomainInfo | None:
        return self.info

    async def destroy(self, uuid: str) -> None:
        self.destroys.append(time.monotonic())
        if len(self.destroys) <= self.failures:
            raise DriverError("destroy: Failed to terminate process: Device or resource busy")

    async def undefine(self, uuid: str) -> None:
        self.info = None

    async def observe(self, uuid: str, known_id: int | None = None,
                      incoming: bool = False) -> tuple[VmState, int, str | None]:
        if self.info is None:
            raise NoDomain("observe: no domain")
        return self.info.state, 1, None


GONE = "bbbbbbbb-0000-4000-8000-000000000002"


async def test_a_failed_destroy_is_retried_promptly_and_the_domain_stays_filtered_until_gone():
    driver = FailingDestroy(failures=2)
    rec = VmReconciler(driver, NoBridges(), VmSettings(domain_type="qemu"), lambda kind, ident, body: None)
    with pytest.raises(NotListed):
        rec.domain_taps()  # before the first listing a departing domain could be missed: nothing is claimed
    await rec.start()
    assert rec.domain_taps() == {GONE: ("hstdead0001",)}
    t0 = time.monotonic()
    await rec.apply({}, {}, {}, {})
    assert len(driver.destroys) == 1 and rec.domain_taps() == {GONE: ("hstdead0001",)}  # failed: still filtered
    while rec.domain_taps():
        assert time.monotonic() - t0 < 10, "the removal was not retried"
        await asyncio.sleep(0.02)
    gaps = [b - a for a, b in zip(driver.destroys, driver.destroys[1:], strict=False)]
    assert len(driver.destroys) == 3
    assert 0.5 <= gaps[0] < 2.0 and 1.0 <= gaps[1] < 4.0  # with backoff, yet sooner than a VM's retry (2 s, 4 s)
    await rec.close()
