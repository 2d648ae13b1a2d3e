"""The VM reconciler's settings: the `[vm]` section of kvmagent's config (defaults suit a production host)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from agentkit.model import CacheMode, ConsoleMode, CpuMode


class VmSettings(BaseModel):
    drift_policy: Literal["restart", "adopt"] = "restart"
    domain_type: Literal["auto", "kvm", "qemu"] = "auto"
    cpu_mode: CpuMode = "none"
    cache_mode: CacheMode = "none"
    console_mode: ConsoleMode = "vnc"
    # VNC/SPICE listen here; None: the management address (host_address), else loopback. Never every address
    # unless set so: a console has no password (the console proxy, issue of its own, is the way in).
    console_listen: str | None = None
    host_address: str | None = None  # the management address; the console host reported for a wildcard

    @property
    def console_address(self) -> str:
        return self.console_listen or self.host_address or "127.0.0.1"
    serial_log_dir: str = "/var/log/hoststack/vm"
    serial_log_max_bytes: int = 1 << 20  # per VM: `<vm>.log` up to this, the part before in `<vm>.log.1`
    serial_log_check_interval: float = 2.0
    volume_dir: str = "/var/lib/hoststack/volumes"  # base of relative qcow2 paths
    stop_timeout: float = 60.0
    retry_backoff_max: float = 60.0  # cap of the delay before a VM that failed to converge is tried again
    restart_backoff_max: float = 60.0
    smbios_asset_tag: str = "hoststack.zstack.io"
