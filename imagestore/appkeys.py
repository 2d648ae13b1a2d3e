"""Typed aiohttp application state of the image store, in one place."""

from __future__ import annotations

from aiohttp import web

from imagestore.catalog import Catalog
from imagestore.settings import ImageStoreSettings

SETTINGS = web.AppKey("settings", ImageStoreSettings)
CATALOG = web.AppKey("catalog", Catalog)
TICKET_KEY = web.AppKey("ticket_key", bytes)
CALLER = web.RequestKey("caller", str)  # `coordinator`, or the read ticket's subject
