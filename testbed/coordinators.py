"""Coordinator replicas as real processes on loopback, sharing one etcd (a member or a cluster); over TLS
given the run's PKI (testbed.pki), else in plain HTTP (`tls.plain_http`)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from agentkit.tls import client_context
from coordinator.client import Client
from testbed import guest_image, sandbox
from testbed.etcd import Etcd, EtcdCluster
from testbed.netns import RUN_ROOT, Run
from testbed.pki import PLAIN, TestPki
from testbed.ports import free_port


class Coordinator:
    def __init__(self, run: Run, etcd: Etcd | EtcdCluster, token: str, name: str = "coord",
                 pki: TestPki | None = None, writable: Sequence[str] | None = None, **settings: object):
        """`settings` become HS_COORDINATOR_* variables; with `writable`, the process runs in its unit's
        file-system sandbox (testbed.sandbox) with these directories writable."""
        self.run, self.etcd, self.token, self.name, self.pki = run, etcd, token, name, pki
        self.writable = writable
        self.port = free_port()
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.pki else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path | None:
        """The CA that verifies this replica (None: it serves plain HTTP)."""
        return self.pki.ca if self.pki else None

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, token or self.token, ca=self.ca)

    def env(self) -> dict[str, str]:
        tls = ({"tls": self.pki.settings("coordinator"), "ca_key": self.pki.layout.ca_key} if self.pki
               else {"tls": PLAIN})
        settings = {**self.etcd.client_settings(), "port": self.port, "admin_token": self.token,
                    "replica_id": self.name, "config": "/nonexistent", "file_roots": ",".join(bed_file_roots()),
                    "secret_key": secret_key(self.token), **tls, **self.settings}
        return {**{f"HS_COORDINATOR_{k.upper()}": str(v) for k, v in settings.items() if v is not None},  # None: unset
                "TMPDIR": str(self.tmp)}

    @property
    def tmp(self) -> Path:
        """Its temporary directory (its unit's private /tmp), which goes with the run: what its deploy children
        leave there when they are killed too."""
        return self.run.path(f"{self.name}-tmp")

    def start(self, timeout: float = 20) -> Coordinator:
        command = [sys.executable, "-m", "coordinator.main"]
        if self.writable is not None:
            command = sandbox.argv(self.writable, command)
        self.tmp.mkdir(exist_ok=True)
        self.proc = self.run.popen(command, log_name=self.name, env=self.env())
        context = client_context(self.ca) if self.pki else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.run.path(self.name + ".log").read_text()[-2000:]
                raise RuntimeError(f"coordinator exited {self.proc.returncode}: {log}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1, context=context):  # noqa: S310
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


def secret_key(token: str) -> str:
    """The credential key of the test bed's replicas that share admin token `token` (one key for all of
    them, as replicas of one installation share theirs; production keys are random, not derived)."""
    return base64.urlsafe_b64encode(hashlib.sha256(b"test bed secret key " + token.encode()).digest()).decode()
