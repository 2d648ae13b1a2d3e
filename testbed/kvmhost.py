"""A simulated KVM host running the real agent: namespace + private libvirtd + kvmagent process.

The agent reaches the coordinator through a portal (a loopback port inside the namespace relayed to
the coordinator's loopback port), as a real host reaches its management network. With a coordinator over
TLS the agent is too: it verifies the coordinator with the run's CA, asks it for its own certificate and
serves its API with it on the host's address.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from agentkit.proc import run
from coordinator.client import Client
from flatnet.l3ns import short_id
from testbed.coordinators import Coordinator, bed_file_roots
from testbed.libvirthost import LibvirtHost
from testbed.netns import Run
from testbed.ports import free_port
from testbed.switch import Switch


class Reachable(Protocol):
    """A coordinator on a loopback port of the root namespace (testbed.coordinators.Coordinator, or a portal)."""

    @property
    def port(self) -> int: ...

    @property
    def ca(self) -> Path | None:
        """The CA that verifies it (None: plain HTTP)."""


class KvmHost:
    def __init__(self, run: Run, switch: Switch, name: str, public: Switch | None = None, api_port: int | None = None):
        self.run, self.name = run, name
        self.libvirt = LibvirtHost(run, name)
        self.ns = self.libvirt.ns
        self.address = switch.plug(self.ns, "eth0")   # management (addressed)
        switch.plug(self.ns, "eth1", address=False)     # data: the L2 networks' physical interfaces
        (public or switch).plug(self.ns, "eth2", address=False)  # a separate public segment when given
        self.agent: subprocess.Popen[bytes] | None = None
        self.portal: subprocess.Popen[bytes] | None = None
        self.uuid = self.token = ""  # the host's identity at the coordinator, once `register` ran
        self._agent_env: dict[str, str] = {}
        self._nofile: int | None = None
        self._capabilities: list[str] | None = None
        self._mounts: list[str] = []  # nsenter's --mount when the agent shares libvirtd's mount namespace
        self.api_port = api_port or free_port()  # given: the coordinator's `kvmagent_port` (console tunnels)
        self.api_token = secrets.token_urlsafe(24)  # the agent API's own credential
        self.ca: str | None = None  # the CA of a TLS run (the agent's certificate is the coordinator's)
        self.state_dir = run.path(f"{name}-state")

    @property
    def netns_prefix(self) -> str:
        """Of the namespaces the agent makes: unique per host, removed with the run."""
        return f"{self.run.prefix}{self.name}"

    def flat_netns(self, l3_uuid: str) -> str:
        """The agent's namespace of an L3's flat services (DHCP, DNS, metadata)."""
        return f"{self.netns_prefix}f{short_id(l3_uuid)}"

    async def register(self, api: Client) -> KvmHost:
        host = await api.post("/v1/hosts", {"name": self.name, "address": str(self.address.ip)})
        self.uuid, self.token = host["uuid"], host["token"]
        return self

    def start(self, coordinator: Reachable | Sequence[Reachable], start_libvirt: bool = True,
              nofile: int | None = None, capabilities: Iterable[str] | None = None, libvirt_mounts: bool = False,
              **settings: Any) -> KvmHost:
        """Start libvirtd (if needed and wanted), the portal and the agent (with `nofile` descriptors at most,
        hard and soft, when given; keeping only the `capabilities` CAP_…, as its systemd unit's bounding set
        leaves it, when given); wait for its API. Given several coordinator replicas, the portal is the
        agent's load balancer in front of them.

        `libvirt_mounts`: the agent shares libvirtd's mount namespace (as on a real host, both see the same
        mounts, and `mount()` changes them for this host alone); the namespaces it makes are then its own."""
        if not self.uuid:
            raise RuntimeError(f"host {self.name}: register() it before start()")
        if self.libvirt.proc is None and start_libvirt:
            self.libvirt.start()
        prefix = self.netns_prefix
        inner = free_port()
        replicas = list(coordinator) if isinstance(coordinator, Sequence) else [coordinator]
        self.portal = self.run.popen([sys.executable, "-m", "testbed.portal", self.ns.name, str(inner),
                                      ",".join(str(c.port) for c in replicas)], log_name=f"{self.name}-portal")
        vm = {"domain_type": "qemu", "serial_log_dir": str(self.libvirt.dir / "serial"),
              "volume_dir": str(self.libvirt.vm_dir), "host_address": str(self.address.ip),
              "console_dir": str(self.libvirt.dir / "consoles"), "stop_timeout": 5, "file_roots": bed_file_roots(),
              **settings.pop("vm", {})}
        self.ca = str(replicas[0].ca) if replicas[0].ca else None
        scheme, tls = ("https", {"ca": self.ca}) if self.ca else ("http", {"plain_http": True})
        env = {"HS_KVMAGENT_CONFIG": "/nonexistent", "HS_KVMAGENT_COORDINATOR_URL": f"{scheme}://127.0.0.1:{inner}",
               "HS_KVMAGENT_HOST_UUID": self.uuid, "HS_KVMAGENT_HOST_TOKEN": self.token,
               "HS_KVMAGENT_TLS": json.dumps(tls), "HS_KVMAGENT_API_TOKEN": self.api_token,
               "HS_KVMAGENT_HOST_NAME": self.name,
               "HS_KVMAGENT_LISTEN": self.api_address, "HS_KVMAGENT_PORT": str(self.api_port),
               "HS_KVMAGENT_STATE_DIR": str(self.state_dir), "HS_KVMAGENT_LIBVIRT_URI": self.libvirt.uri,
               "HS_KVMAGENT_VM": json.dumps(vm), "HS_KVMAGENT_LOG_LEVEL": os.environ.get("HS_AGENT_LOG_LEVEL", "INFO"),
               "HS_KVMAGENT_FLATNET": json.dumps({"netns_prefix": f"{prefix}f"}),
               "HS_KVMAGENT_EIP": json.dumps({"netns_prefix": f"{prefix}e"})}
        env.update({f"HS_KVMAGENT_{k.upper()}": v if isinstance(v, str) else json.dumps(v)
                    for k, v in settings.items()})
        self._agent_env, self._nofile = env, nofile
        self._capabilities = None if capabilities is None else list(capabilities)
        if libvirt_mounts and self.libvirt.proc:
            self._mounts = [f"--mount=/proc/{self.libvirt.proc.pid}/ns/mnt"]
        return self.restart_agent()

    def restart_agent(self) -> KvmHost:
        """Start the agent again as `start` last did (its portal still runs); wait for its API."""
        self.agent = self.run.popen(self._agent_argv(), log_name=f"{self.name}-agent", env=self._agent_env)
        self.wait_api()
        return self

    def second_agent(self, timeout: float = 30, **settings: str) -> subprocess.CompletedProcess[str]:
        """Run another agent process as `start` last started this host's, with `settings` changed (an operator
        running `kvmagent` by hand beside the service), until it ends: its exit status and output."""
        env = {**os.environ, **self._agent_env, **{f"HS_KVMAGENT_{k.upper()}": v for k, v in settings.items()}}
        return subprocess.run(self._agent_argv(), env=env, capture_output=True, text=True, timeout=timeout,  # noqa: S603
                              check=False)

    def _agent_argv(self) -> list[str]:
        # nsenter, not `ip netns exec`: the agent must share the mount namespace, or the namespaces it
        # creates under /run/netns are visible to it alone.
        limit = ["prlimit", f"--nofile={self._nofile}:{self._nofile}", "--"] if self._nofile else []
        caps = self._capabilities
        confine = [] if caps is None else \
            ["setpriv", "--bounding-set=-all" + "".join(f",+{c.lower().removeprefix('cap_')}" for c in caps), "--"]
        return [*limit, "nsenter", f"--net=/run/netns/{self.ns.name}", *self._mounts, *confine,
                sys.executable, "-m", "kvmagent.main"]

    def wait_api(self, timeout: float = 30) -> None:
        if (agent := self.agent) is None:
            raise RuntimeError(f"host {self.name}: the agent is not started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if agent.poll() is not None:
                raise RuntimeError(f"kvmagent exited {agent.returncode}: {self.log()[-3000:]}")
            if self.agent_api("/health", quiet=True) is not None:
                return
            time.sleep(0.1)
        raise RuntimeError(f"kvmagent API did not come up: {self.log()[-3000:]}")

    @property
    def api_address(self) -> str:
        """Where the agent API listens: the host's address over TLS (its certificate names it), else loopback."""
        return str(self.address.ip) if self.ca else "127.0.0.1"

    def agent_api(self, path: str, quiet: bool = False) -> dict[str, Any] | None:
        """GET the agent's own API from inside its namespace (where it listens); `quiet`: None while it cannot
        answer (not listening yet, no certificate yet)."""
        tls = ["--cacert", self.ca] if self.ca else []
        scheme = "https" if self.ca else "http"
        out = self.ns.sh("curl", "-s", *tls, "-H", f"Authorization: Bearer {self.api_token}",
                         f"{scheme}://{self.api_address}:{self.api_port}{path}",
                         rcs=range(256) if quiet else (0,))
        if out.returncode or not out.stdout:
            return None
        return json.loads(out.stdout) if path != "/metrics" else {"text": out.stdout}

    def relay(self, port: int) -> None:
        """Make the test bed's loopback `port` (an image store there) reachable inside the host at
        127.0.0.1:`port`, as the coordinator's is through the portal."""
        self.run.popen([sys.executable, "-m", "testbed.portal", self.ns.name, str(port), str(port)],
                       log_name=f"{self.name}-relay-{port}")

    def mount(self, *args: str) -> None:
        """`mount ARGS` (or `umount` when the first is "-u") in this host's mount namespace (libvirtd's) alone."""
        if self.libvirt.proc is None:
            raise RuntimeError(f"host {self.name}: its libvirtd (and mount namespace) is not running")
        cmd = ["umount", *args[1:]] if args[:1] == ("-u",) else ["mount", *args]
        run(["nsenter", f"--mount=/proc/{self.libvirt.proc.pid}/ns/mnt", *cmd])

    def inside(self, path: Path) -> Path:
        """`path` as this host's mount namespace (libvirtd's) sees it: its own mounts over the machine's."""
        if self.libvirt.proc is None:
            raise RuntimeError(f"host {self.name}: its libvirtd (and mount namespace) is not running")
        return Path(f"/proc/{self.libvirt.proc.pid}/root{path}")

    def log(self) -> str:
        p = self.run.path(f"{self.name}-agent.log")
        return p.read_text() if p.exists() else ""

    def kill_agent(self) -> None:
        """SIGKILL the agent, as a crash would; `restart_agent` starts it again."""
        if self.agent:
            self.run.kill(self.agent)
            self.agent = None

    def stop_agent(self) -> None:
        for p in (self.agent, self.portal):
            if p:
                self.run.stop(p)
        self.agent = self.portal = None

    def close(self) -> None:
        self.stop_agent()
        self.libvirt.close()


def mounting_hosts(run: Run, coordinator: Coordinator, token: str, names: list[str],
                   binds: list[tuple[Path, Path]], switch: str | Switch = "sw", api_port: int | None = None,
                   mounts: Sequence[tuple[str, ...]] = (), **settings: Any) -> list[KvmHost]:
    """Hosts registered and started whose agents share their libvirtd's mount namespace (storage tests;
    no network services), with each (source, target) of `binds` bind-mounted in every one and each of
    `mounts` (`mount` arguments) mounted in every one; on a switch of their own (`switch` names it: one per
    name in a run) or on the `Switch` given (where the test plugs other namespaces too). With `api_port`
    every agent listens on that port on all its addresses (the hosts reach each other's agents, as a
    coordinator with that `kvmagent_port` does)."""
    segment = switch if isinstance(switch, Switch) else Switch(run, switch)
    hosts = [KvmHost(run, segment, name) for name in names]
    if api_port is not None:
        for h in hosts:
            h.api_port = api_port
        settings = {"listen": "0.0.0.0", **settings}  # noqa: S104 - inside the host's namespace

    async def register() -> None:
        async with Client(coordinator.url, token) as api:
            for h in hosts:
                await h.register(api)

    asyncio.run(register())
    for h in hosts:
        h.libvirt.start()
        for source, target in binds:
            h.mount("--bind", str(source), str(target))
        for args in mounts:
            h.mount(*args)
        h.start(coordinator, libvirt_mounts=True, network_services=False,
                **{"storage": {"check_interval": 1}, **settings})
    return hosts
