"""Host certificates: the coordinator signs a host's key with the CA (`ca_key`, see agentkit.pki).

A certificate names the host by its uuid (common name) and is valid for the host's registered address
only, whatever the request asked for, so a host can never hold a certificate for another's address. An
agent asks for its own with its token (and renews it when a third of its life is left); the deployer
asks with the admin token for agents that never dial in.
"""

from __future__ import annotations

import functools
from pathlib import Path

from agentkit import pki
from agentkit.errors import Invalid
from coordinator.domain import hosts
from coordinator.domain.errors import NotConfigured
from coordinator.etcd.store import Store
from coordinator.settings import CoordinatorSettings


@functools.lru_cache(maxsize=2)
def _issuer(cert: Path, key: Path) -> pki.Issuer:
    return pki.Issuer.load(cert, key)


def issuer(settings: CoordinatorSettings) -> pki.Issuer:
    """The CA this coordinator issues with; NotConfigured without its key."""
    key = settings.ca_key or pki.Layout().ca_key
    if not key.exists():
        raise NotConfigured(f"this coordinator issues no certificates: no CA key at {key} (set ca_key, or give "
                            "the hosts certificates of your own)")
    try:
        return _issuer(settings.tls.ca_file(), key)
    except pki.PkiError as e:
        raise NotConfigured(f"the CA cannot issue: {e}") from None


async def issue(store: Store, settings: CoordinatorSettings, ref: str, csr: str) -> tuple[str, str, float]:
    """A certificate for host `ref`'s key in `csr`: (chain PEM, CA PEM, expiry)."""
    host = await hosts.find(store, ref)
    ca = issuer(settings)
    try:
        cert = ca.sign_request(csr.encode(), host.uuid, [host.address], settings.host_cert_days)
    except pki.PkiError as e:
        raise Invalid(str(e), field="csr") from None
    return pki.pem([cert, ca.cert]).decode(), pki.pem([ca.cert]).decode(), pki.not_after(cert)
