"""Credentials at rest (e.g. the SSH passwords in Ceph monUrls): Fernet-encrypted before they reach etcd.

The key is the `secret_key` setting: one Fernet key, or several separated by commas to rotate (the
first encrypts, every one decrypts). Without it a key is derived from `admin_token` with HKDF, so a
small installation needs no extra secret; changing the admin token then makes stored credentials
unreadable, which is why production installations should set `secret_key`.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agentkit.errors import Conflict
from coordinator.settings import fernet_keys

_INFO = b"hoststack coordinator credentials v1"


class CredentialError(Conflict):
    """A stored credential cannot be decrypted with the configured keys (the keys changed since)."""

    code = "undecryptable"


def derive_key(admin_token: str) -> bytes:
    """A Fernet key derived from the admin token (HKDF-SHA256), used when `secret_key` is unset."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(admin_token.encode())
    return base64.urlsafe_b64encode(raw)


@functools.lru_cache(maxsize=4)
def _cipher(secret_key: str | None, admin_token: str) -> MultiFernet:
    if secret_key:
        return MultiFernet([Fernet(k) for k in fernet_keys(secret_key)])
    return MultiFernet([Fernet(derive_key(admin_token))])


def encrypt(secret_key: str | None, admin_token: str, plaintext: str) -> str:
    return _cipher(secret_key, admin_token).encrypt(plaintext.encode()).decode()


def decrypt(secret_key: str | None, admin_token: str, token: str) -> str:
    try:
        return _cipher(secret_key, admin_token).decrypt(token.encode()).decode()
    except InvalidToken:
        raise CredentialError("a stored credential cannot be decrypted: secret_key (or admin_token, "
                              "when secret_key is unset) changed since it was stored") from None
