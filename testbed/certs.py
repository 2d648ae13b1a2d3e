"""A throw-away CA and the certificates a test run needs (etcd members and their clients, HostStack's
processes), as PEM files: agentkit.pki's CA and layout in a directory of the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentkit import pki

LIFETIME_DAYS = 2


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


class TestCA:
    """Issues certificates into `directory`: `ca.pem`, then `<name>.pem` (chain) / `<name>-key.pem` per issue."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "hoststack test CA"):
        self.dir = directory
        self.layout = pki.Layout(directory)
        if not self.layout.ca.exists():
            pki.init_ca(self.layout, name, LIFETIME_DAYS)
        self.issuer = pki.Issuer.load(self.layout.ca, self.layout.ca_key)
        self.ca = self.layout.ca

    def issue(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), client: bool = True,
              server: bool = True) -> Pair:
        """A certificate for `name` (its common name) valid for `hosts` (IP addresses and DNS names)."""
        key = pki.new_key()
        cert = self.issuer.issue(key.public_key(), name, hosts, LIFETIME_DAYS, client=client, server=server)
        pair = Pair(self.layout.cert(name), self.layout.key(name))
        pki.write_key(pair.key, key)
        pki.write_certs(pair.cert, [cert, self.issuer.cert])
        return pair
