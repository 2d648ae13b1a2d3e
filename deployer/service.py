"""A long-running HostStack process as systemd runs it, and as a host without systemd runs it.

A `Service` is data: the command line, ordering, the user, and the sandbox its unit gets. The file
layout (unit, supervisor script, pidfile, log) derives from its name, so the deployer, `hs-ctl` and the
probe agree on paths. The sandboxes are chosen per process (docs/operations.md, "Units"):

- `sandbox()`: a process that needs no privilege beyond its own files (the coordinator, etcd, the Ceph
  agent): no capabilities, a read-only system but its state directories, private /tmp and devices, no
  new privileges, no kernel tunables, modules, logs, clock or control groups. Agents that declare
  nothing get `sandbox("full")`, which leaves /var writable.
- `KVMAGENT_SANDBOX`: the KVM agent creates network namespaces and must share the host's mount
  namespace (their names live as bind mounts in /run/netns), so nothing that gives it a mount
  namespace of its own; it keeps only the capabilities in `KVMAGENT_CAPABILITIES`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

# What the kvmagent does with each (the test bed can run it with exactly this bounding set: testbed/kvmhost.py).
KVMAGENT_CAPABILITIES = {
    "CAP_NET_ADMIN": "links, bridges, addresses, routes, nftables tables, namespaces' network settings",
    "CAP_SYS_ADMIN": "creating network namespaces and their /run/netns bind mounts, entering them (setns)",
    "CAP_NET_RAW": "the DHCP server's packet sockets, gratuitous ARP for EIPs",
    "CAP_NET_BIND_SERVICE": "DHCP (67), DNS (53) and metadata (80) listeners inside namespaces",
}
Directives = tuple[tuple[str, str], ...]
_COMMON: Directives = (
    ("NoNewPrivileges", "yes"), ("RestrictSUIDSGID", "yes"), ("RestrictRealtime", "yes"), ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"),
)


def sandbox(protect_system: str = "strict") -> Directives:
    """The sandbox of an unprivileged process; the system read-only: all of it but the state directories
    ("strict"), or /usr, /boot and /etc ("full": for agents whose data may live anywhere)."""
    return (*_COMMON, ("CapabilityBoundingSet", ""), ("ProtectSystem", protect_system), ("ProtectHome", "read-only"),
            ("PrivateTmp", "yes"), ("PrivateDevices", "yes"), ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"), ("ProtectKernelLogs", "yes"), ("ProtectControlGroups", "yes"),
            ("ProtectClock", "yes"), ("ProtectHostname", "yes"), ("RestrictNamespaces", "yes"),
            ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"))


SANDBOX = sandbox()
KVMAGENT_SANDBOX: Directives = (*_COMMON, ("CapabilityBoundingSet", " ".join(KVMAGENT_CAPABILITIES)))


def home(name: str) -> str:
    """A HostStack program's directory on a host (supervisor script; an agent's venvs)."""
    return f"/opt/hoststack/{name}"


@dataclass(frozen=True)
class Service:
    name: str  # the unit is hoststack-<name>.service
    description: str
    argv: tuple[str, ...]
    after: tuple[str, ...] = ("network-online.target",)
    user: str | None = None  # None: root
    notify: bool = False  # the process tells systemd when it is ready (sd_notify)
    sandbox: Directives = SANDBOX
    writable: tuple[str, ...] = ()  # paths a strict sandbox leaves writable besides its state directories
    conflicts: tuple[str, ...] = ()  # units that must not run beside it (a distribution's own)
    limit_nofile: int = 65536

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    @property
    def unit(self) -> str:
        return f"hoststack-{self.name}.service"

    @property
    def unit_path(self) -> str:
        return f"/etc/systemd/system/{self.unit}"

    @property
    def supervisor(self) -> str:
        return f"{home(self.name)}/supervise.sh"

    @property
    def pidfile(self) -> str:
        return f"/run/hoststack/{self.name}.pid"

    @property
    def log(self) -> str:
        """The process's stderr on hosts without systemd (journald has it otherwise)."""
        return f"/var/log/hoststack/{self.name}.log"

    def control(self) -> dict[str, str]:
        """What `deployer.remote` needs to tell whether it runs, and to start or stop it."""
        return {"unit": self.unit, "pidfile": self.pidfile, "supervisor": self.supervisor, "log": self.log}
