"""Coordinator replicas as real processes on loopback, sharing one etcd (a member or a cluster)."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
import urllib.request

from testbed import guest_image
from testbed.etcd import Etcd, EtcdCluster
from testbed.netns import RUN_ROOT, Run
from testbed.ports import free_port


class Coordinator:
    def __init__(self, run: Run, etcd: Etcd | EtcdCluster, token: str, name: str = "coord", **settings: object):
        self.run, self.etcd, self.token, self.name = run, etcd, token, name
        self.port = free_port()
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        settings = {**self.etcd.client_settings(), "port": self.port, "admin_token": self.token,
                    "replica_id": self.name, "config": "/nonexistent", "file_roots": ",".join(bed_file_roots()),
                    **self.settings}
        env = {f"HS_COORDINATOR_{k.upper()}": str(v) for k, v in settings.items()}
        return env

    def start(self, timeout: float = 20) -> Coordinator:
        self.proc = self.run.popen([sys.executable, "-m", "coordinator.main"], log_name=self.name, env=self.env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.run.path(self.name + ".log").read_text()[-2000:]
                raise RuntimeError(f"coordinator exited {self.proc.returncode}: {log}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):  # noqa: S310
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("coordinator did not start")

    def stop(self) -> None:
        if self.proc:
            self.run.stop(self.proc)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no lease revocation, no goodbye."""
        if self.proc:
            self.run.kill(self.proc)
            self.proc = None


def bed_file_roots() -> list[str]:
    """Where the test bed keeps the files VMs name: the tiny guest's cache and the runs' directories."""
    return [str(guest_image.CACHE_ROOT), str(RUN_ROOT)]


def admin_token() -> str:
    return secrets.token_urlsafe(24)
