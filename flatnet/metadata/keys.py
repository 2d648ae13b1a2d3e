"""Typed aiohttp state of the metadata apps, in one place so handlers and middlewares share the names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from flatnet.metadata.identity import Identifier
    from flatnet.metadata.imds import TokenSigner
    from flatnet.metadata.instance import Caller

IDENTIFIER: web.AppKey[Identifier] = web.AppKey("identifier")
TOKENS: web.AppKey[TokenSigner] = web.AppKey("tokens")
CALLER: web.RequestKey[Caller] = web.RequestKey("caller")
