"""Credentials at rest (SSH passwords, the tokens the coordinator presents to agents): Fernet-encrypted
before they reach etcd.

The key is the `secret_key` setting, a secret of its own: one Fernet key, or several separated by commas
to rotate (the first encrypts, every one decrypts). Nothing else derives it, so neither an admin token
nor anything stored in etcd decrypts a credential. Without it, storing or reading one is refused.
"""

from __future__ import annotations

import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from agentkit.errors import Conflict
from coordinator.domain.errors import NotConfigured
from coordinator.settings import fernet_keys


class CredentialError(Conflict):
    """A stored credential cannot be decrypted with the configured keys (the keys changed since)."""

    code = "undecryptable"


@functools.lru_cache(maxsize=4)
def _cipher(secret_key: SecretStr | None) -> MultiFernet:
    if not secret_key:
        raise NotConfigured("stored credentials need the coordinator setting secret_key, a Fernet key of its own "
                            "(docs/security.md says how to make one)")
    return MultiFernet([Fernet(k) for k in fernet_keys(secret_key.get_secret_value())])


def encrypt(secret_key: SecretStr | None, plaintext: str) -> str:
    return _cipher(secret_key).encrypt(plaintext.encode()).decode()


def decrypt(secret_key: SecretStr | None, token: str) -> str:
    try:
        return _cipher(secret_key).decrypt(token.encode()).decode()
    except InvalidToken:
        raise CredentialError("a stored credential cannot be decrypted: secret_key changed since it was stored "
                              "(keep the old key after the new one while rotating)") from None
