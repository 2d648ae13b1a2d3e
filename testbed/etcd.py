"""Real etcd on free loopback ports with its data in the run's directory: one member, or a cluster of
several (`EtcdCluster`), optionally with client TLS (certificates from `testbed.certs`) and auth on.

Members can be killed (SIGKILL), paused (SIGSTOP, a hang) and restarted on their data, which is what
the failover tests do to them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from agentkit.proc import run as run_cmd
from coordinator.etcd.endpoints import EtcdConfig, TlsFiles
from testbed.certs import Pair, TestCA
from testbed.netns import Run
from testbed.ports import free_port

ROOT_PASSWORD = "root-secret-password"  # noqa: S105 - a throw-away cluster's
USER, PASSWORD = "hoststack", "hoststack-etcd-password"


@dataclass(frozen=True)
class ClientTls:
    """What a client of the members needs: the CA and a client certificate (etcd checks it)."""

    ca: TestCA
    client: Pair
    server: Pair

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.ca))
        ctx.load_cert_chain(str(self.client.cert), str(self.client.key))
        return ctx

    def files(self) -> TlsFiles:
        return TlsFiles(self.ca.ca, self.client.cert, self.client.key)

    def etcdctl_flags(self) -> list[str]:
        return [f"--cacert={self.ca.ca}", f"--cert={self.client.cert}", f"--key={self.client.key}"]


class Etcd:
    def __init__(self, run: Run, name: str = "etcd", tls: ClientTls | None = None, extra: tuple[str, ...] = ()):
        self.run = run
        self.name = name
        self.tls = tls
        self.extra = extra
        self.port = free_port()
        self.peer_port = free_port()
        self.initial_cluster = f"{name}={self.peer_url}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return ("https://" if self.tls else "http://") + self.endpoint

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def client_settings(self) -> dict[str, str]:
        """The coordinator settings that reach this member."""
        return _client_settings([self.url if self.tls else self.endpoint], self.tls, auth=False)

    def config(self, **kw: object) -> EtcdConfig:
        """The store driver's configuration for this member."""
        return _config(self.client_settings(), **kw)

    def start(self, timeout: float = 20) -> Etcd:
        self.launch()
        return self.wait_healthy(timeout)

    def launch(self) -> None:
        """Start the process on its data directory (kept across restarts)."""
        tls = ["--cert-file", str(self.tls.server.cert), "--key-file", str(self.tls.server.key),
               "--trusted-ca-file", str(self.tls.ca.ca), "--client-cert-auth"] if self.tls else []
        self.proc = self.run.popen([
            "etcd", "--name", self.name, "--data-dir", str(self.run.path(f"{self.name}-data")),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new",
            "--logger", "zap", "--log-level", "warn", "--unsafe-no-fsync", *tls, *self.extra,
        ], log_name=self.name)

    def wait_healthy(self, timeout: float = 20) -> Etcd:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited {self.proc.returncode}; see {self.run.path(self.name + '.log')}")
            try:
                if self.status().get("leader"):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd {self.name} did not become healthy")

    def status(self) -> dict[str, object]:
        """The member's maintenance status (member id, leader id) from its JSON gateway."""
        req = urllib.request.Request(self.url + "/v3/maintenance/status", data=b"{}", method="POST")  # noqa: S310
        ctx = self.tls.context() if self.tls else None
        with urllib.request.urlopen(req, timeout=1, context=ctx) as r:  # noqa: S310
            doc = json.loads(r.read())
        return {"member": doc.get("header", {}).get("member_id"), "leader": doc.get("leader")}

    def stop(self) -> None:
        if self.proc:
            self.run.stop(self.proc)
            self.proc = None

    def restore(self, backup: Path) -> None:
        """Stopped, its data replaced by `backup` (an `etcdctl snapshot save` file), started again: what
        `hs-ctl restore` does to a control node's etcd, without the seal."""
        self.stop()
        data = self.run.path(f"{self.name}-data")
        shutil.rmtree(data)
        run_cmd(["etcdctl", "snapshot", "restore", str(backup), "--name", self.name, "--data-dir", str(data),
                 "--initial-cluster", self.initial_cluster, "--initial-advertise-peer-urls", self.peer_url],
                timeout=60)
        self.start()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc:
            self.run.kill(self.proc)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the member hangs with its sockets open (a stuck disk, a frozen VM)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


class EtcdCluster:
    """`size` members on loopback; `tls` makes clients use TLS with client certificates, `auth` turns
    on etcd's user/password auth with a `hoststack` user allowed everything under `/` (its tokens
    expire after `token_ttl` seconds unused)."""

    def __init__(self, run: Run, size: int = 3, name: str = "etcd", tls: bool = False, auth: bool = False,
                 token_ttl: int = 300):
        self.run = run
        self.auth = auth
        self.client_tls: ClientTls | None = None
        if tls:
            ca = TestCA(run.path(f"{name}-pki"))
            self.client_tls = ClientTls(ca, ca.issue(f"{name}-client", server=False), ca.issue(f"{name}-server"))
        extra = ("--auth-token-ttl", str(token_ttl))
        self.members = [Etcd(run, f"{name}{i}", self.client_tls, extra) for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = initial

    @property
    def endpoints(self) -> list[str]:
        return [m.url if self.client_tls else m.endpoint for m in self.members]

    def client_settings(self) -> dict[str, str]:
        """The coordinator settings that reach every member (as `HS_COORDINATOR_*` takes them)."""
        return _client_settings(self.endpoints, self.client_tls, self.auth)

    def config(self, **kw: object) -> EtcdConfig:
        """The store driver's configuration for the cluster."""
        return _config(self.client_settings(), **kw)

    def member(self, endpoint: str) -> Etcd:
        """The member an endpoint as the driver prints it (`http://127.0.0.1:port`) names."""
        return next(m for m in self.members if endpoint.endswith(m.endpoint))

    def start(self, timeout: float = 30) -> EtcdCluster:
        for m in self.members:
            m.launch()
        for m in self.members:
            m.wait_healthy(timeout)
        if self.auth:
            self._enable_auth()
        return self

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def leader(self) -> Etcd:
        """The member that leads now (asked of the members that answer)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for m in self.members:
                if m.proc is None:
                    continue
                try:
                    st = m.status()
                except OSError:
                    continue
                if st["leader"] and st["leader"] == st["member"]:
                    return m
            time.sleep(0.05)
        raise RuntimeError("no etcd member leads")

    def etcdctl(self, *args: str, user: str | None = None) -> str:
        live = [m.url for m in self.members if m.proc is not None]
        flags = [f"--endpoints={','.join(live)}", *(self.client_tls.etcdctl_flags() if self.client_tls else [])]
        if user:
            flags.append(f"--user={user}")
        return run_cmd(["etcdctl", *flags, *args], timeout=30).stdout

    def _enable_auth(self) -> None:
        self.etcdctl("user", "add", f"root:{ROOT_PASSWORD}")
        self.etcdctl("role", "add", USER)
        self.etcdctl("role", "grant-permission", USER, "--prefix=true", "readwrite", "/")
        self.etcdctl("user", "add", f"{USER}:{PASSWORD}")
        self.etcdctl("user", "grant-role", USER, USER)
        self.etcdctl("auth", "enable")


def _client_settings(endpoints: list[str], tls: ClientTls | None, auth: bool) -> dict[str, str]:
    out = {"etcd": ",".join(endpoints)}
    if tls:
        out.update(etcd_ca=str(tls.ca.ca), etcd_cert=str(tls.client.cert), etcd_key=str(tls.client.key))
    if auth:
        out.update(etcd_user=USER, etcd_password=PASSWORD)
    return out


def _config(settings: dict[str, str], **kw: object) -> EtcdConfig:
    tls = TlsFiles(*(Path(settings[k]) if k in settings else None for k in ("etcd_ca", "etcd_cert", "etcd_key")))
    return EtcdConfig.of(settings["etcd"], tls=tls, user=settings.get("etcd_user"),
                         password=settings.get("etcd_password"), **kw)
