"""IMDSv2 session tokens, bound to the VM NIC that asked for one (the HTTP side: `http/imdsv2.py`).

A token is HMAC(process secret, NIC uuid, expiry), so nothing is stored and a token copied to another
VM is worthless there. Tokens die with the process; clients (cloud-init) ask for a new one on 401.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable

_EXPIRY = struct.Struct("!Q")
_MAC_LEN = 20


class TokenSigner:
    """Issues and checks NIC-bound tokens with a secret that lives only in this process. The server's signer
    keeps the default monotonic clock: kept replies to token requests expire on it."""

    def __init__(self, max_ttl: int, clock: Callable[[], float] = time.monotonic):
        self._secret = secrets.token_bytes(32)
        self._clock = clock
        self.max_ttl = max_ttl

    def _mac(self, nic_uuid: str, expiry: bytes) -> bytes:
        return hmac.new(self._secret, nic_uuid.encode() + b"\0" + expiry, hashlib.sha256).digest()[:_MAC_LEN]

    def issue(self, nic_uuid: str, ttl: int) -> str:
        expiry = _EXPIRY.pack(int(self._clock()) + ttl)
        return base64.urlsafe_b64encode(expiry + self._mac(nic_uuid, expiry)).decode()

    def valid(self, token: str, nic_uuid: str) -> bool:
        return self.expiry(token, nic_uuid) is not None

    def expiry(self, token: str, nic_uuid: str) -> float | None:
        """When a token issued to `nic_uuid` expires (on this signer's clock); None if it is not valid now."""
        try:
            raw = base64.urlsafe_b64decode(token.encode())
        except ValueError:
            return None
        if len(raw) != _EXPIRY.size + _MAC_LEN:
            return None
        expiry, mac = raw[: _EXPIRY.size], raw[_EXPIRY.size:]
        until = float(_EXPIRY.unpack(expiry)[0])
        return until if hmac.compare_digest(mac, self._mac(nic_uuid, expiry)) and until > self._clock() else None
