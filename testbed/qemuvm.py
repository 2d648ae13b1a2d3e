"""A bare qemu (TCG) running the tiny guest with its consoles on unix sockets, as libvirt lays them out.

For the console path's tests and benchmark, which need a real VNC/SPICE server and a real serial port but
no VM management: the screen's VNC and SPICE servers and the serial port each listen on a unix socket in
the run directory (nothing on the network), the serial port is also logged to a file (what the agent's
`<log file=… append='on'/>` gives libvirt VMs), and QMP answers `screendump` for the guest's real screen.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

from testbed.guest_image import GuestImage
from testbed.netns import Run


class QemuVm:
    def __init__(self, run_: Run, guest: GuestImage, name: str = "console-vm", uuid: str | None = None):
        self.run = run_
        self.name = name
        self.uuid = uuid or "c0450000-0000-4000-8000-000000000001"
        self.dir = run_.path(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.guest = guest
        self.proc: subprocess.Popen | None = None

    def socket(self, kind: str) -> Path:
        """The unix socket of console `kind` (vnc, spice, serial); `qmp` for the monitor."""
        return self.dir / f"{kind}.sock"

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"

    def argv(self) -> list[str]:
        serial = (f"socket,id=serial0,path={self.socket('serial')},server=on,wait=off,"
                  f"logfile={self.serial_log},logappend=on")
        return ["qemu-system-x86_64", "-name", self.name, "-uuid", self.uuid, "-machine", "pc,accel=tcg",
                "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config", "-nic", "none",
                "-smbios", f"type=1,manufacturer=HostStack,serial={self.uuid}",
                "-kernel", str(self.guest.kernel), "-initrd", str(self.guest.initrd),
                "-append", self.guest.cmdline("hold"),
                "-vga", "std", "-display", "none", "-vnc", f"unix:{self.socket('vnc')}",
                "-spice", f"unix=on,addr={self.socket('spice')},disable-ticketing=on",
                "-chardev", serial, "-serial", "chardev:serial0",
                "-qmp", f"unix:{self.socket('qmp')},server=on,wait=off"]

    def start(self, timeout: float = 20) -> QemuVm:
        self.serial_log.unlink(missing_ok=True)
        self.proc = self.run.popen(self.argv(), log_name=f"{self.name}-qemu")
        deadline = time.monotonic() + timeout
        while not all(self.socket(k).exists() for k in ("vnc", "spice", "serial", "qmp")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qemu did not start; see {self.log}")
            time.sleep(0.05)
        return self

    @property
    def log(self) -> Path:
        """qemu's own output (its warnings: a SPICE client's refused ticket, for one)."""
        return self.run.path(f"{self.name}-qemu.log")

    def serial_text(self) -> str:
        return self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""

    def wait_serial(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        """The first match of `pattern` in the serial log, waiting for it."""
        deadline = time.monotonic() + timeout
        while not (m := re.search(pattern, self.serial_text())):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in {self.serial_log}:\n{self.serial_text()[-2000:]}")
            time.sleep(0.2)
        return m

    def qmp(self, command: str, **arguments: object) -> object:
        """One QMP command on a fresh monitor connection; its `return` value."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.socket("qmp")))
            f = s.makefile("rw")
            json.loads(f.readline())  # greeting
            for msg in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments}):
                f.write(json.dumps(msg) + "\n")
                f.flush()
                while "return" not in (reply := json.loads(f.readline())):
                    if "error" in reply:
                        raise RuntimeError(f"qmp {msg['execute']}: {reply['error']}")
            return reply["return"]

    def screendump(self, path: Path) -> Path:
        """The guest's screen as qemu has it (PPM)."""
        self.qmp("screendump", filename=str(path))
        return path

    def stop(self) -> None:
        if self.proc is not None:
            self.run.stop(self.proc)
            self.proc = None
