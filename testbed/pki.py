"""The test bed's PKI: a CA per run (agentkit.pki's layout under the run's directory) and the TLS settings
each process of the run gets, so that tests, benchmarks and the demo run TLS on every hop."""

from __future__ import annotations

import json
from pathlib import Path

from agentkit import pki
from testbed.netns import Run


class TestPki:
    __test__ = False  # not a pytest class

    def __init__(self, run: Run):
        self.layout = pki.Layout(run.path("pki"))
        if not self.layout.ca.exists():
            pki.init_ca(self.layout, f"HostStack test CA {run.prefix}")
        self.issuer = pki.Issuer.load(self.layout.ca, self.layout.ca_key)

    @property
    def ca(self) -> Path:
        return self.layout.ca

    def issue(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: float = 2) -> dict[str, str]:
        """A certificate for process `name` valid for `hosts`: its `[tls]` settings."""
        chain, key = self.issuer.issue_pair(name, hosts, days)
        pki.write_key(self.layout.key(name), key)
        pki.write_certs(self.layout.cert(name), chain)
        return {"cert": str(self.layout.cert(name)), "key": str(self.layout.key(name)), "ca": str(self.ca)}

    def settings(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> str:
        """`HS_<PROCESS>_TLS` for a process serving as `name` on `hosts`."""
        return json.dumps(self.issue(name, hosts))


PLAIN = json.dumps({"plain_http": True})  # `HS_<PROCESS>_TLS` of a process a test runs without TLS
