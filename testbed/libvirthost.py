"""A simulated KVM host: a network namespace with a private libvirtd.

libvirtd runs inside the namespace (its taps and bridges live there) with /run/libvirt,
/var/lib/libvirt, /var/log/libvirt and /etc/libvirt bind-mounted from the run directory, so the
machine's own libvirt is untouched. The mounts happen in the mount namespace `ip netns exec`
creates, by this module's `__main__` (no shell), which then execs libvirtd in the foreground.
qemu.conf is adjusted for a root-only, cgroup-less machine: no dynamic ownership, no security
driver, no per-VM mount namespaces, qemu's stdio to a file (no virtlogd).

Hooks for larger test beds: `connect(peer_ns, peer_name)` wires the host's "physical" `eth0`
to another namespace (a switch or a service namespace) with a veth pair; `add_address` gives the
host a management address (SPICE wants a non-loopback IPv4 address to listen).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from agentkit.proc import run
from testbed.netns import Netns, Run

log = logging.getLogger(__name__)
CAPS_CACHE = Path(os.environ.get("HS_LIBVIRT_CACHE", "/var/cache/hoststack/libvirt"))
QEMU_CONF = """
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""
# TCP without authentication, inside the host's own namespace only: how the two libvirtds of a live
# migration reach each other in the test bed (production: qemu+tls with each host's certificate).
LIBVIRTD_CONF = ('\nlog_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
                 'listen_tls = 0\nlisten_tcp = 1\nauth_tcp = "none"\n')
BINDS = (("run", "/run/libvirt"), ("lib", "/var/lib/libvirt"), ("log", "/var/log/libvirt"), ("etc", "/etc/libvirt"))


class LibvirtHost:
    """One simulated hypervisor host; `close()` destroys its domains and stops libvirtd."""

    def __init__(self, run_: Run, role: str = "hv"):
        self.run = run_
        self.role = role
        self.ns: Netns = run_.netns(role)
        self.dir = run_.path(f"{role}-libvirt")
        self.vm_dir = self.dir / "vm"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    def qemu_log(self, domain: str) -> Path:
        """qemu's own stdout/stderr (its command line is the first lines)."""
        return self.dir / "log" / "qemu" / f"{domain}.log"

    def connect(self, peer: Netns, peer_name: str, dev: str = "eth0") -> None:
        """Wire this host's physical interface `dev` to `peer_name` in another namespace."""
        self.run.veth(self.ns, dev, peer, peer_name)

    def add_address(self, cidr: str, dev: str = "lo") -> None:
        self.ns.ip("addr", "add", cidr, "dev", dev)

    def _prepare(self) -> None:
        for sub in ("run", "lib/qemu", "log", "vm"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        etc = self.dir / "etc"
        if not etc.exists():
            shutil.copytree("/etc/libvirt", etc, symlinks=True)
            for xml in [*etc.glob("qemu/networks/autostart/*.xml"), *etc.glob("qemu/*.xml")]:
                xml.unlink()
            with open(etc / "qemu.conf", "a") as f:
                f.write(QEMU_CONF)
            with open(etc / "libvirtd.conf", "a") as f:
                f.write(LIBVIRTD_CONF)
        CAPS_CACHE.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 30) -> LibvirtHost:
        """Start (or restart) libvirtd and wait until it accepts connections."""
        self._prepare()
        self.socket.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "testbed.libvirthost", str(self.dir), str(CAPS_CACHE)]
        self.proc = self.ns.popen(argv, log_name=f"{self.role}-libvirtd")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"libvirtd exited {self.proc.returncode}; see {self.dir}/log/libvirtd.log")
            if self.socket.exists() and self.virsh("version", rcs=(0, 1)).startswith("Compiled"):
                return self
            time.sleep(0.05)
        raise RuntimeError("libvirtd did not come up")

    def stop_libvirtd(self) -> None:
        """Stop only libvirtd (as a crash or upgrade would); running qemu processes survive."""
        if self.proc:
            self.run.stop(self.proc, timeout=15, group=False)
            self.proc = None

    def kill_libvirtd(self) -> None:
        """SIGKILL libvirtd, as a crash would; running qemu processes survive."""
        if self.proc:
            self.run.kill(self.proc)
            self.proc = None

    def restart_libvirtd(self) -> None:
        self.stop_libvirtd()
        self.start()

    def virsh(self, *args: str, rcs: Sequence[int] = (0,)) -> str:
        """virsh against this host (a subprocess: this process's libvirt event loop stays untouched)."""
        return run(["virsh", "-q", "-c", self.uri, *args], rcs=rcs).stdout

    def close(self) -> None:
        """Destroy and undefine every domain, then stop libvirtd (the run kills any leftovers)."""
        if self.proc and self.proc.poll() is None:
            for name in self.virsh("list", "--name").split():
                self.virsh("destroy", name, rcs=(0, 1))
            for name in self.virsh("list", "--all", "--name").split():
                self.virsh("undefine", name, rcs=(0, 1))
        self.stop_libvirtd()


def _exec_libvirtd(state: Path, cache: Path) -> None:
    """Inside the namespace's private mount namespace: bind the runtime dirs, become libvirtd."""
    for sub, target in BINDS:
        Path(target).mkdir(parents=True, exist_ok=True)
        run(["mount", "--bind", str(state / sub), target])
    Path("/var/cache/libvirt").mkdir(parents=True, exist_ok=True)
    run(["mount", "--bind", str(cache), "/var/cache/libvirt"])
    os.execvp("libvirtd", ["libvirtd", "--listen", "-p", "/run/libvirt/hs-libvirtd.pid"])


if __name__ == "__main__":
    _exec_libvirtd(Path(sys.argv[1]), Path(sys.argv[2]))
