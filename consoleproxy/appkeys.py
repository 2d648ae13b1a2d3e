"""Typed aiohttp application state of the console proxy, in one place."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from agentkit.metrics import Registry
from consoleproxy.failures import FailureBudget
from consoleproxy.grants import Resolver
from consoleproxy.sessions import Sessions
from consoleproxy.settings import ConsoleProxySettings

SETTINGS = web.AppKey("settings", ConsoleProxySettings)
RESOLVER = web.AppKey("resolver", Resolver)
SESSIONS = web.AppKey("sessions", Sessions)
FAILURES = web.AppKey("failures", FailureBudget)
TUNNELS = web.AppKey("tunnels", aiohttp.ClientSession)
METRICS = web.AppKey("metrics", Registry)
