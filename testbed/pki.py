"""The test bed's PKI for HostStack's processes: the run's CA (testbed.certs, agentkit.pki's layout under the
run's directory) and the `[tls]` settings each process gets, so that tests, benchmarks and the demo run
TLS on every hop."""

from __future__ import annotations

import json
import socket

from agentkit.netns import netns_socket
from testbed.certs import TestCA
from testbed.netns import Run


class TestPki(TestCA):
    __test__ = False  # not a pytest class

    def __init__(self, run: Run):
        super().__init__(run.path("pki"), f"HostStack test CA {run.prefix}")

    def settings(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> str:
        """`HS_<PROCESS>_TLS` for a process serving as `name` on `hosts`."""
        pair = self.issue(name, hosts)
        return json.dumps({"cert": str(pair.cert), "key": str(pair.key), "ca": str(self.ca)})


PLAIN = json.dumps({"plain_http": True})  # `HS_<PROCESS>_TLS` of a process a test runs without TLS


def connect(host: str, port: int, ns: str | None = None) -> socket.socket:
    """A TCP connection to `host`:`port` from this namespace, or from the namespace `ns`."""
    if ns is None:
        return socket.create_connection((host, port), timeout=5)

    def setup(s: socket.socket) -> None:
        s.settimeout(5)
        s.connect((host, port))
    return netns_socket(ns, socket.AF_INET, socket.SOCK_STREAM, setup)


def plain_http(host: str, port: int, ns: str | None = None) -> bytes:
    """What a listener answers a plain HTTP request with (b"" when it closes without a word of HTTP)."""
    with connect(host, port, ns) as s:
        s.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        out = b""
        try:
            while chunk := s.recv(4096):
                out += chunk
        except ConnectionResetError:
            pass
    return out


def refuses_plain_http(host: str, port: int, ns: str | None = None) -> bool:
    """The listener never speaks HTTP without TLS."""
    return not plain_http(host, port, ns).startswith(b"HTTP/")
