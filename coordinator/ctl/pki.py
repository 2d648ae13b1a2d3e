"""The control node's certificates: made by `hs-ctl install` with HostStack's CA (agentkit.pki), kept while
they serve, renewed when a third of their life is left.

Pure, like the rest of the node's rendering: the install's probe reads back the PKI files the node has
(`names`), and `node_pki` answers the files it should have: the ones found while they serve, new ones
for the rest. The CA stays on the node (the coordinator issues hosts their certificates with its key);
a new CA is made only where there is none. An operator's own certificates (`hs-ctl install --tls-dir`)
are laid out as given instead, and never renewed here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature

from agentkit import pki
from deployer.render import RENEW_AT

CA_NAME = "ca.pem"
CA_KEY_NAME = "ca-key.pem"
# role -> what it serves: etcd's client and peer listeners on loopback, the coordinator's API, and the
# certificate the coordinator and hs-ctl present to etcd
ROLES = ("etcd-server", "etcd-peer", "etcd-client", "coordinator")
DAYS = 365
LOOPBACK = ("127.0.0.1", "localhost")


def cert_name(role: str) -> str:
    return pki.Layout().cert(role).name


def key_name(role: str) -> str:
    return pki.Layout().key(role).name


def names() -> list[str]:
    """Every PKI file a node has, by name in layout.PKI."""
    return [CA_NAME, CA_KEY_NAME, *(n for role in ROLES for n in (cert_name(role), key_name(role)))]


def _hosts(role: str, address: str) -> tuple[str, ...]:
    return (address, *LOOPBACK) if role == "coordinator" else LOOPBACK


def _serves(found: Mapping[str, str], role: str, hosts: tuple[str, ...], ca: pki.Issuer, now: float) -> bool:
    """The node's certificate of `role` is the CA's, names `hosts` and has more than a third of its life left."""
    text = found.get(cert_name(role))
    if text is None or key_name(role) not in found:
        return False
    try:
        leaf = pki.load_certs(text.encode())[0]
        leaf.verify_directly_issued_by(ca.cert)
    except (pki.PkiError, ValueError, TypeError, InvalidSignature):
        return False
    return pki.names_of(leaf) == set(hosts) and pki.life_left(leaf, now) > RENEW_AT


def node_pki(address: str, found: Mapping[str, str], now: float | None = None) -> tuple[tuple[str, str], ...]:
    """(file name, PEM) of every PKI file the node should have, given the ones it has (`found`)."""
    now = time.time() if now is None else now
    try:
        ca = pki.Issuer(pki.load_certs(found[CA_NAME].encode())[0], pki.load_key(found[CA_KEY_NAME].encode()))
    except (KeyError, pki.PkiError):
        cert, key = pki.make_ca(f"HostStack CA {address}")
        ca = pki.Issuer(cert, key)
    out = {CA_NAME: pki.pem([ca.cert]).decode(), CA_KEY_NAME: pki.key_pem(ca.key).decode()}
    for role in ROLES:
        hosts = _hosts(role, address)
        if _serves(found, role, hosts, ca, now):
            out[cert_name(role)], out[key_name(role)] = found[cert_name(role)], found[key_name(role)]
        else:
            chain, key = ca.issue_pair(role, hosts, DAYS)
            out[cert_name(role)], out[key_name(role)] = pki.pem(chain).decode(), pki.key_pem(key).decode()
    return tuple(out.items())
