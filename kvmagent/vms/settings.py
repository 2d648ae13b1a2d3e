"""The VM reconciler's settings: the `[vm]` section of kvmagent's config (defaults suit a production host)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from agentkit.model import CacheMode, ConsoleMode, CpuMode


class VmSettings(BaseModel):
    drift_policy: Literal["restart", "adopt"] = "adopt"  # seed 1.0: out-of-band changes are the VM's state
    domain_type: Literal["auto", "kvm", "qemu"] = "auto"
    cpu_mode: CpuMode = "none"
    cache_mode: CacheMode = "writethrough"  # seed 1.2
    console_mode: ConsoleMode = "vnc"
    console_dir: str = "/run/hoststack/consoles"  # the VMs' console sockets (nothing listens on the network)
    host_address: str | None = None  # the host's management address, reported in its facts
    serial_log_dir: str = "/var/log/hoststack/vm"
    serial_log_max_bytes: int = 1 << 20  # per VM: `<vm>.log` up to this, the part before in `<vm>.log.1`
    serial_log_check_interval: float = 2.0
    volume_dir: str = "/var/lib/hoststack/volumes"  # base of relative disk, ISO and kernel paths
    file_roots: list[str] = ["/var/lib/hoststack"]  # besides volume_dir, where absolute ones may lie
    stop_timeout: float = 60.0
    retry_backoff_max: float = 60.0  # cap of the delay before a VM that failed to converge is tried again
    restart_backoff_max: float = 60.0
    smbios_asset_tag: str = "hoststack.zstack.io"
