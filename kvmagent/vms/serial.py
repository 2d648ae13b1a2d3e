"""Serial console logs, bounded: a guest writes its console as fast as it likes, the host keeps at most
`serial_log_max_bytes` of it per VM in `<vm>.log` plus the part before in `<vm>.log.1`.

qemu appends to `<serial_log_dir>/<vm uuid>.log` (the domain XML opens it with `append="on"`, so with
O_APPEND), which lets the agent rotate by copy and truncate: once the log passes the cap its content
replaces `<vm>.log.1` and the log is cut to zero; qemu's next write lands at the new end. What the
guest writes between the copy and the cut is lost (logrotate's `copytruncate` makes the same trade).
Sizes are checked every `serial_log_check_interval` seconds (a `stat` per VM), so a log can pass the
cap by what its guest writes in one interval. The logs of a VM go with its domain (`drop`), also when it
left by live migration (libvirt undefined it); those of VMs this host no longer knows are swept once the
agent knows its VMs after a start (`sweep`).

Why not libvirt: virtlogd rotates chardev logs (`max_size`, `max_backups` in virtlogd.conf) only when
qemu.conf says `stdio_handler = "logd"` and virtlogd runs; the agent's own trimming holds whatever the
host's libvirt configuration (the test bed runs without virtlogd).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)
SUFFIXES = (".log.1.tmp", ".log.1", ".log")  # what `trim` leaves in the directory, longest first


class SerialLogs:
    """The serial logs of the VMs `ours()` names, in `directory`."""

    def __init__(self, directory: str, max_bytes: int, interval: float, ours: Callable[[], Iterable[str]]):
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.interval = interval
        self._ours = ours

    def path(self, vm_uuid: str) -> Path:
        return self.dir / f"{vm_uuid}.log"

    async def run(self) -> None:
        """Trim every interval; a file that cannot be trimmed now is logged and tried again next time."""
        while True:
            await asyncio.sleep(self.interval)
            await asyncio.to_thread(self.trim, list(self._ours()))

    def trim(self, vm_uuids: Iterable[str]) -> None:
        """(worker thread) Rotate every log of `vm_uuids` that passed the cap."""
        for vm_uuid in vm_uuids:
            path = self.path(vm_uuid)
            try:
                if path.stat().st_size <= self.max_bytes:
                    continue
                older = path.with_suffix(".log.1")
                shutil.copyfile(path, older.with_suffix(".1.tmp"))
                os.replace(older.with_suffix(".1.tmp"), older)
                os.truncate(path, 0)
            except FileNotFoundError:
                continue
            except OSError as e:
                log.warning("serial log of vm %s not trimmed: %s", vm_uuid, e)

    def drop(self, vm_uuid: str) -> None:
        """Remove a VM's logs (its domain is gone)."""
        path = self.path(vm_uuid)
        for p in (path, path.with_suffix(".log.1")):
            _unlink(p)

    async def sweep(self) -> None:
        """Remove the logs of every VM not `ours()` (gone while the agent was down, or left live before
        such logs were dropped)."""
        await asyncio.to_thread(self._sweep, set(self._ours()))

    def _sweep(self, ours: set[str]) -> None:
        try:
            names = os.listdir(self.dir)
        except OSError as e:
            log.warning("serial logs not swept: %s", e)
            return
        for name in names:
            vm_uuid = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), None)
            if vm_uuid is not None and vm_uuid not in ours:
                _unlink(self.dir / name)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        log.warning("serial log %s not removed: %s", path, e)
