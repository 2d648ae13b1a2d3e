"""Typed application state keys shared by the coordinator's modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from coordinator.etcd.hints import Hints
    from coordinator.etcd.store import Store
    from coordinator.leader.election import Election
    from coordinator.settings import CoordinatorSettings

STORE: web.AppKey[Store] = web.AppKey("store")
SETTINGS: web.AppKey[CoordinatorSettings] = web.AppKey("settings")
ADMIN_TOKEN: web.AppKey[str] = web.AppKey("admin_token", str)
ELECTION: web.AppKey[Election] = web.AppKey("election")
HINTS: web.AppKey[Hints] = web.AppKey("hints")
