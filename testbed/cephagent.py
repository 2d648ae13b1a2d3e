"""A real `cephagent` process for a test-bed Ceph cluster, listening on a loopback address.

The coordinator reaches the agent of a mon at `http://<mon_server_ip>:<cephagent_port>`; a test gives
the coordinator this agent's `port` and `token` as its `cephagent_port`/`cephagent_token` settings and
uses `127.0.0.1` as mon_server_ip. Another loopback address (127.0.0.2) on the same port can then host
a stand-in agent of "another cluster".
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from testbed.ceph import CephCluster
from testbed.ports import free_port


class CephAgentProcess:
    def __init__(self, cluster: CephCluster, file_roots: list[Path] | None = None, listen: str = "127.0.0.1",
                 vm_client: str = "client.hsvms", port: int | None = None):
        self.cluster = cluster
        self.listen = listen
        self.port = port or free_port()
        self.token = secrets.token_urlsafe(24)
        self.file_roots = file_roots or []
        self.vm_client = vm_client
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}:{self.port}"

    def env(self) -> dict[str, str]:
        return {"HS_CEPHAGENT_CONFIG": "/nonexistent.toml", "HS_CEPHAGENT_TOKEN": self.token,
                "HS_CEPHAGENT_LISTEN": self.listen, "HS_CEPHAGENT_PORT": str(self.port),
                "HS_CEPHAGENT_CEPH_CONF": str(self.cluster.conf), "HS_CEPHAGENT_VM_CLIENT_NAME": self.vm_client,
                "HS_CEPHAGENT_TMP_DIR": str(self.cluster.dir / f"agent-tmp-{self.port}"),
                "HS_CEPHAGENT_FILE_URL_ROOTS": ",".join(str(p) for p in self.file_roots)}

    def start(self, timeout: float = 30) -> CephAgentProcess:
        run, log_name = self.cluster.run, f"cephagent-{self.port}"
        self.proc = run.popen([sys.executable, "-m", "cephagent.main"], env=self.env(), log_name=log_name)
        deadline = time.monotonic() + timeout
        req = urllib.request.Request(self.url + "/health", headers={"Authorization": f"Bearer {self.token}"})
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = run.path(f"{log_name}.log").read_text()[-2000:]
                raise RuntimeError(f"cephagent exited {self.proc.returncode}: {log}")
            try:
                with urllib.request.urlopen(req, timeout=2):  # noqa: S310
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("cephagent did not answer")

    def stop(self) -> None:
        if self.proc is not None:
            self.cluster.run.stop(self.proc)
            self.proc = None
