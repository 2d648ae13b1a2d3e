"""A real etcd on free loopback ports with its data in the run's directory."""

from __future__ import annotations

import subprocess
import time
import urllib.request

from testbed.netns import Run
from testbed.ports import free_port


class Etcd:
    def __init__(self, run: Run, name: str = "etcd"):
        self.run = run
        self.name = name
        self.port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> Etcd:
        data = self.run.path(f"{self.name}-data")
        self.proc = self.run.popen([
            "etcd", "--name", self.name, "--data-dir", str(data),
            "--listen-client-urls", f"http://{self.endpoint}",
            "--advertise-client-urls", f"http://{self.endpoint}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-cluster", f"{self.name}=http://127.0.0.1:{self.peer_port}",
            "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn",
            "--unsafe-no-fsync",
        ], log_name=self.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited {self.proc.returncode}; see {self.run.path(self.name + '.log')}")
            try:
                with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as r:  # noqa: S310
                    if b'"true"' in r.read():
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("etcd did not become healthy")

    def stop(self) -> None:
        if self.proc:
            self.run.stop(self.proc)
            self.proc = None
