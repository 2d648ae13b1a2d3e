"""Typed application state keys shared by the coordinator's modules."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from agentkit.metrics import Registry
from agentkit.supervise import Supervisor
from coordinator.etcd.hints import Hints
from coordinator.etcd.store import Store
from coordinator.fanout.credentials import HostCredentials
from coordinator.fanout.hub import Fanout
from coordinator.settings import CoordinatorSettings


class Leadership(Protocol):
    """What the API asks of this replica's election (coordinator.leader.election.Election)."""

    @property
    def is_leader(self) -> bool:
        """This replica holds a live lease and all its leader loops run."""

    async def leader(self) -> str | None:
        """The replica that leads now, if any."""


STORE: web.AppKey[Store] = web.AppKey("store", Store)
SETTINGS: web.AppKey[CoordinatorSettings] = web.AppKey("settings", CoordinatorSettings)
ELECTION: web.AppKey[Leadership] = web.AppKey("election")
HINTS: web.AppKey[Hints] = web.AppKey("hints", Hints)
SUPERVISOR: web.AppKey[Supervisor] = web.AppKey("supervisor", Supervisor)
FANOUT: web.AppKey[Fanout] = web.AppKey("fanout", Fanout)
CREDENTIALS: web.AppKey[HostCredentials] = web.AppKey("credentials", HostCredentials)
METRICS: web.AppKey[Registry] = web.AppKey("metrics", Registry)
