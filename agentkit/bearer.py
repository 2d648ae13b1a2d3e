"""Bearer tokens, as every HostStack listener reads them: the token of a header, compared in constant time.

A token is visible ASCII (RFC 6750's b64token is a subset): a header holding anything else (`Bearer é`,
bytes that are no UTF-8) carries no token of ours and is refused like a wrong one, never a 500.
"""

from __future__ import annotations

import hmac
import re

TOKEN = re.compile(r"^[\x21-\x7e]{1,4096}$")


def from_header(value: str) -> str:
    """The token of an `Authorization` value (`Bearer <token>`, the scheme in any case); "" when none."""
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and TOKEN.match(token) else ""


def matches(value: str, token: str) -> bool:
    """The `Authorization` value carries `token`."""
    given = from_header(value)
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())
