"""Read tickets: what a hypervisor shows the image store to read one image, and nothing else.

The coordinator mints a ticket for a host it has authenticated (its host token) and one image; the
image store checks it with the same key and serves that image's data. Neither side stores tickets.
The key is derived from the store's `token` (which only the coordinator and the store hold), so a
ticket reveals nothing that could add, change or delete images, and a stolen one reads one image
until it expires. A ticket is `hsr1.<payload>.<mac>`: base64url JSON `{"sub", "img", "exp"}` and its
HMAC-SHA256. Its expiry is on the coordinator's clock and is checked on the store's, within
`agentkit.tickets.SKEW` either way: honoured until that long past it, and refused when it reaches further
ahead than `MAX_TTL` plus that (the store's clock is behind). An upload ticket (`"op": "put"` among the
claims) lets a host send the bytes of one image made of a volume, and nothing else; a read ticket cannot
upload, an upload ticket cannot read. It may travel as `Authorization: Bearer <ticket>` or as the query
`?ticket=<ticket>` (for a client that takes only a URL, such as the cephagent's importer).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Literal

from agentkit.tickets import SKEW

PREFIX = "hsr1"
KEY_LABEL = b"hoststack imagestore read ticket v1"
MAX_TTL = 7 * 24 * 3600
Op = Literal["read", "put"]
Reason = Literal["malformed", "signature", "expired", "clock_behind", "other_image", "other_op"]


class BadTicket(Exception):
    """The ticket is malformed, forged, expired or for another image: `reason` says which (a fixed word, what
    /metrics counts refusals by), the message how."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Ticket:
    subject: str  # who it was minted for, e.g. `host:<uuid>`: logged with every read
    image_id: str
    expires: int


def ticket_key(token: str) -> bytes:
    return hmac.new(token.encode(), KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(key: bytes, subject: str, image_id: str, ttl: int, now: float | None = None,
         op: Op = "read") -> tuple[str, int]:
    """A ticket for `subject` to read (or upload) `image_id` for `ttl` seconds; returns it and its expiry
    (unix time)."""
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ticket ttl {ttl} is not within 1..{MAX_TTL} s")
    expires = int(now if now is not None else time.time()) + ttl
    claims: dict[str, object] = {"sub": subject, "img": image_id, "exp": expires}
    if op != "read":
        claims["op"] = op
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = _b64(hmac.new(key, f"{PREFIX}.{payload}".encode(), hashlib.sha256).digest())
    return f"{PREFIX}.{payload}.{mac}", expires


def verify(key: bytes, ticket: str, image_id: str, now: float | None = None, op: Op = "read") -> Ticket:
    """The ticket's claims if it is genuine, unexpired, for `image_id` and for `op`; BadTicket otherwise."""
    prefix, _, rest = ticket.partition(".")
    payload, _, mac = rest.partition(".")
    if prefix != PREFIX or not payload or not mac:
        raise BadTicket("malformed", "not a read ticket")
    want = hmac.new(key, f"{PREFIX}.{payload}".encode(), hashlib.sha256).digest()
    try:
        genuine = hmac.compare_digest(_unb64(mac), want)
        claims = json.loads(_unb64(payload)) if genuine else {}
    except (binascii.Error, ValueError):
        raise BadTicket("malformed", "not a read ticket") from None
    if not genuine:
        raise BadTicket("signature", "signature does not match (minted with another key?)")
    try:
        t = Ticket(subject=str(claims["sub"]), image_id=str(claims["img"]), expires=int(claims["exp"]))
    except (KeyError, TypeError, ValueError):
        raise BadTicket("malformed", "malformed claims") from None
    now = now if now is not None else time.time()
    if t.expires + SKEW < now:
        raise BadTicket("expired", f"expired at {t.expires}, {now - t.expires:.0f} s ago by this store's clock")
    if t.expires - now > MAX_TTL + SKEW:
        raise BadTicket("clock_behind", f"it expires at {t.expires}, later than a ticket lasts by this store's "
                        f"clock: the store's clock is behind the coordinator's by more than {SKEW} s")
    if t.image_id != image_id:
        raise BadTicket("other_image", f"it is for image {t.image_id}, not {image_id}")
    if (given := claims.get("op", "read")) != op:
        raise BadTicket("other_op", f"it is a {given} ticket, not a {op} ticket")
    return t
