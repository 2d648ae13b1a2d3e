"""A real `imagestore` process in a namespace of the test bed, and HTTP clients that reach it there.

Tests speak to it as the coordinator would (`client()`, with the token) and as a host would
(`session()` with a read ticket): sockets are made inside the namespace (agentkit.netns), so the
test process needs no route into it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp

from agentkit.netns import netns_socket
from agentkit.tls import client_context
from deployer.model import Target
from imagestore.client import ImageStoreClient
from imagestore.tickets import mint, ticket_key
from testbed.netns import Netns, Run
from testbed.pki import PLAIN, TestPki

PORT = 8744  # the image store's own default (imagestore/settings.py)


def ns_session(ns_name: str, timeout: aiohttp.ClientTimeout | None = None,
               context: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    """An aiohttp session whose connections start inside `ns_name` (verifying TLS servers with `context`)."""
    def factory(addr_info: tuple) -> socket.socket:
        family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
        return netns_socket(ns_name, family, type_, proto=proto)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=factory, ssl=context or True),
                                 timeout=timeout or aiohttp.ClientTimeout(total=60))


def ns_get(ns_name: str, address: str, port: int, path: str, token: str,
           context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """Status and body of a GET with a bearer token, over a socket made in `ns_name` (blocking: for
    code outside an event loop, such as a deploy's Connected check); over TLS verified with `context`."""
    conn = http.client.HTTPConnection(address, port, timeout=2)
    sock = netns_socket(ns_name, socket.AF_INET, socket.SOCK_STREAM, lambda s: s.connect((address, port)))
    conn.sock = context.wrap_socket(sock, server_hostname=address) if context else sock
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def serves_version(ns_name: str, target: Target, version: str) -> bool:
    """A deploy's Connected check for an image store (bound to `ns_name` with functools.partial, it crosses to
    the deploy's process): its /health, asked from `ns_name` with the host's token, names `version`."""
    status, body = ns_get(ns_name, target.address, PORT, "/health", target.host_token or "")
    return status == 200 and json.loads(body)["version"] == version


def get(url: str, token: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """Status and body of a GET with a bearer token from this namespace."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=2, context=context) as reply:  # noqa: S310 (a test bed URL)
            return reply.status, reply.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class ImageStoreProcess:
    """The agent in a namespace (`where` a Netns), or in the test's own namespace on loopback (`where` the
    Run: for a coordinator on loopback to reach it); `token` is its host's, when a coordinator knows it.
    Given the run's `pki` it serves TLS only, with a certificate for its address."""

    def __init__(self, where: Netns | Run, root: Path, address: str, port: int = PORT,
                 file_roots: list[Path] | None = None, settings: dict[str, object] | None = None,
                 token: str | None = None, pki: TestPki | None = None):
        self.where, self.root, self.address, self.port = where, root, address, port
        self.pki = pki
        self.context = client_context(pki.ca) if pki else None  # verifies this store
        self.run = where.run if isinstance(where, Netns) else where
        self.token = token or secrets.token_urlsafe(24)
        self.file_roots = file_roots or []
        self.settings = settings or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.pki else 'http'}://{self.address}:{self.port}"

    def env(self) -> dict[str, str]:
        env = {"HS_IMAGESTORE_CONFIG": "/nonexistent.toml", "HS_IMAGESTORE_TOKEN": self.token,
               "HS_IMAGESTORE_LISTEN": self.address, "HS_IMAGESTORE_PORT": str(self.port),
               "HS_IMAGESTORE_ROOT": str(self.root),
               "HS_IMAGESTORE_FILE_URL_ROOTS": ",".join(str(p) for p in self.file_roots),
               "HS_IMAGESTORE_RESERVE_BYTES": "0", "HS_IMAGESTORE_LOG_LEVEL": "DEBUG",
               "HS_IMAGESTORE_TLS": self.pki.settings(f"imagestore-{self.port}", (self.address,)) if self.pki
               else PLAIN}
        return env | {f"HS_IMAGESTORE_{k.upper()}": str(v) for k, v in self.settings.items()}

    def start(self, timeout: float = 30) -> ImageStoreProcess:
        log_name = f"imagestore-{self.port}"
        self.proc = self.where.popen([sys.executable, "-m", "imagestore.main"], env=self.env(), log_name=log_name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"imagestore exited {self.proc.returncode}: {self.log()[-2000:]}")
            with contextlib.suppress(OSError):
                if self.get("/health")[0] == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError("imagestore did not answer")

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        """A GET with the store's token (or `token`, e.g. a read ticket), from wherever the test process is."""
        if isinstance(self.where, Netns):
            return ns_get(self.where.name, self.address, self.port, path, token or self.token, self.context)
        return get(self.url + path, token or self.token, self.context)

    def log(self) -> str:
        return self.run.path(f"imagestore-{self.port}.log").read_text()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.proc is not None:
            self.run.kill(self.proc)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.run.stop(self.proc)
            self.proc = None

    def client(self, session: aiohttp.ClientSession) -> ImageStoreClient:
        return ImageStoreClient(self.url, self.token, session)

    def ticket(self, image_id: str, subject: str = "host:test", ttl: int = 300) -> str:
        return mint(ticket_key(self.token), subject, image_id, ttl)[0]
