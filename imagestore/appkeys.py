"""Typed aiohttp application state of the image store, in one place."""

from __future__ import annotations

from aiohttp import web

from agentkit.metrics import Registry
from imagestore.catalog import Catalog
from imagestore.settings import ImageStoreSettings
from imagestore.tally import Tally

SETTINGS = web.AppKey("settings", ImageStoreSettings)
CATALOG = web.AppKey("catalog", Catalog)
TICKET_KEY = web.AppKey("ticket_key", bytes)
METRICS = web.AppKey("metrics", Registry)
TALLY = web.AppKey("tally", Tally)
CALLER = web.RequestKey("caller", str)  # `coordinator`, `scraper`, or the read ticket's subject
