"""Simulated Debian hosts reachable over SSH, for the deployer's tests and benchmark.

An `SshLab` owns a controller namespace holding a bridge (198.18.x.1/24 from the run's range) and
any number of `SshTarget`s, each a network namespace on that bridge running its own sshd. Each
target also has its own mount namespace: copy-on-write overlays over /etc /usr /var /opt /root (the
upper dirs live in the run directory) and a fresh tmpfs /run, so whatever a deploy writes lands in
that target's view only, the machine's root filesystem stays untouched, and a package check sees
what the machine has installed. Root logs in with a password set in the target's own /etc/shadow.

The controller side runs its ssh client inside the controller namespace through `ssh_executable`,
a wrapper that also records every ssh invocation, so tests count round trips per target.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentkit.proc import run
from testbed.netns import Netns, Run

OVERLAID = ("/etc", "/usr", "/var", "/opt", "/root")
SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey {hostkey}
PermitRootLogin yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication no
UsePAM no
StrictModes no
PidFile none
MaxStartups 100
MaxSessions 100
LogLevel ERROR
Subsystem sftp /usr/lib/openssh/sftp-server
"""
# Runs inside the target's fresh mount namespace, then becomes its sshd.
BOOT = """\
set -e
for d in {overlaid}; do
  n=$(echo "$d" | tr / _)
  mkdir -p "{root}/$n.up" "{root}/$n.work"
  mount -t overlay overlay -o "lowerdir=$d,upperdir={root}/$n.up,workdir={root}/$n.work" "$d"
done
mount -t tmpfs -o mode=0755,size=64m tmpfs /run
mkdir -p /run/sshd
printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
printf 'root:%s\\n' "$HS_ROOT_PASSWORD" | chpasswd
exec /usr/sbin/sshd -D -e -f {config}
"""
WRAPPER = """\
#!/bin/sh
# ssh as run from the test controller: inside {ns}, each call recorded in {log}
printf '%s\\n' "$*" >> {log}
exec ip netns exec {ns} /usr/bin/ssh "$@"
"""


@dataclass
class SshTarget:
    """One simulated host: its namespace, address, root password and (unless unreachable) its sshd."""

    name: str
    ns: Netns
    address: str
    password: str
    root: Path
    sshd: subprocess.Popen[bytes] | None

    def argv(self, args: list[str]) -> list[str]:
        """Run `args` as the target sees the world: its network and mount namespace."""
        if self.sshd is None:
            return self.ns.argv(args)
        return ["nsenter", "-t", str(self.sshd.pid), "-m", "-n", *args]

    def sh(self, *args: str, rcs: Sequence[int] = (0,), timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(self.argv(list(args)), rcs=rcs, timeout=timeout)

    def read(self, path: str) -> str | None:
        p = self.sh("cat", path, rcs=(0, 1))
        return p.stdout if p.returncode == 0 else None

    def mark_installed(self, package: str) -> None:
        """Make dpkg on this target (only) believe `package` is installed."""
        stanza = (f"\nPackage: {package}\nStatus: install ok installed\nPriority: optional\nSection: misc\n"
                  "Maintainer: HostStack tests <tests@invalid>\nArchitecture: all\nVersion: 1.0\n"
                  "Description: test-bed stand-in\n")
        run(self.argv(["tee", "-a", "/var/lib/dpkg/status"]), input=stanza)

    def replace_python(self, script: str) -> None:
        """This target's /usr/bin/python3 (what runs every deploy step) becomes the shell `script` (a hostile or a slow
        python: the real one stays at /usr/bin/python3.11)."""
        self.sh("sh", "-c", 'rm /usr/bin/python3 && printf %s "$0" > /usr/bin/python3 && chmod 755 /usr/bin/python3',
                script)

    def mount_tmpfs(self, path: str, size: str) -> None:
        """A small filesystem at `path` in this target's mount namespace only (for disk-full cases)."""
        self.sh("mkdir", "-p", path)
        self.sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path)


class SshLab:
    """A controller namespace with a bridge, the targets on it, and the ssh wrapper for the controller."""

    def __init__(self, run_: Run):
        self.run = run_
        self.ctl = run_.netns("ctl")
        net = run_.subnet()
        self._hosts = net.hosts()
        self.prefixlen = net.prefixlen
        self.controller_address = str(next(self._hosts))
        self.ctl.ip("link", "add", "hsbr0", "type", "bridge")
        self.ctl.ip("addr", "add", f"{self.controller_address}/{self.prefixlen}", "dev", "hsbr0")
        self.ctl.ip("link", "set", "hsbr0", "up")
        self.hostkey = run_.path("ssh_host_ed25519_key")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.hostkey)])
        self.calls_log = run_.path("ssh-calls.log")
        self.calls_log.touch()
        self.ssh_executable = run_.path("ssh-in-ctl")
        self.ssh_executable.write_text(WRAPPER.format(ns=self.ctl.name, log=self.calls_log))
        self.ssh_executable.chmod(0o755)
        self.known_hosts = run_.path("known_hosts")
        self.targets: list[SshTarget] = []

    @property
    def host_keys(self) -> tuple[str, ...]:
        """The public host key every target's sshd presents, as the coordinator records it."""
        return (" ".join(self.hostkey.with_suffix(".pub").read_text().split()[:2]),)

    def target(self, name: str, password: str | None = None, sshd: bool = True) -> SshTarget:
        """Add a host; `sshd=False` leaves nothing listening (connection refused)."""
        ns = self.run.netns(name)
        address = str(next(self._hosts))
        i = len(self.targets)
        self.run.veth(ns, "eth0", self.ctl, f"hsv{i}")
        self.ctl.ip("link", "set", f"hsv{i}", "master", "hsbr0")
        ns.ip("addr", "add", f"{address}/{self.prefixlen}", "dev", "eth0")
        root = self.run.path(f"root-{name}")
        root.mkdir()
        password = password or secrets.token_urlsafe(12)
        proc = self._start_sshd(ns, address, password, root) if sshd else None
        t = SshTarget(name, ns, address, password, root, proc)
        self.targets.append(t)
        return t

    def _start_sshd(self, ns: Netns, address: str, password: str, root: Path) -> subprocess.Popen[bytes]:
        config = root / "sshd_config"
        config.write_text(SSHD_CONFIG.format(address=address, hostkey=self.hostkey))
        boot = root / "boot.sh"
        boot.write_text(BOOT.format(overlaid=" ".join(OVERLAID), root=root, config=config))
        proc = ns.popen(["unshare", "--mount", "--propagation", "private", "/bin/sh", str(boot)],
                        log_name=f"sshd-{ns.name}", env={"HS_ROOT_PASSWORD": password})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd in {ns.name} exited {proc.returncode}; see {self.run.dir}")
            if ns.sh("ss", "-Htln", "sport = :22").stdout.strip():
                return proc
            time.sleep(0.05)
        raise RuntimeError(f"sshd in {ns.name} did not listen")

    def ssh_calls(self, target: SshTarget) -> int:
        """How many ssh invocations (round trips) the controller made to `target` so far."""
        lines = self.calls_log.read_text().splitlines()
        return sum(1 for line in lines if any(w.split("@")[-1] == target.address for w in line.split()))

    def listen(self, port: int = 0) -> socket.socket:
        """A TCP socket listening on the controller address, for a stand-in coordinator the targets reach."""
        from pyroute2.netns import create_socket

        sock: socket.socket = create_socket(self.ctl.name, socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.controller_address, port))
        sock.listen(128)
        return sock
