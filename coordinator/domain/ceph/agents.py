"""How the coordinator reaches the cephagent of a mon, and how the agents' failures become its own.

The coordinator calls the cephagent at `https://<mon_server_ip>:<cephagent_port>`, verifying that the agent
holds a certificate of the CA for that address, with that agent's own token: the one of the ceph host
registered at that address (kept encrypted in its record), else the shared `cephagent_token` setting (an
agent deployed by hand): one agent per mon host, whatever the mon port. Any
answering agent of a storage serves its calls; the next mon's agent is tried when one is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

from agentkit import tls
from agentkit.addr import http_url
from agentkit.config import revealed
from cephagent.client import CephAgentClient
from cephagent.errors import CephAgentError
from cephagent.wire import ClusterInfo
from coordinator.domain import credentials
from coordinator.domain.ceph.errors import AgentFailed, AgentUnauthorized, CephError, NoAgentToken, NotConfigured
from coordinator.domain.ceph.records import StorageRecord
from coordinator.domain.errors import NotConfigured as NoSecretKey
from coordinator.domain.hosts import agent_token_of, all_hosts
from coordinator.etcd.store import Store
from coordinator.settings import CoordinatorSettings

T = TypeVar("T")
FAILOVER_CODES = {"agent_unreachable", "cluster_unavailable"}
Survey = dict[str, ClusterInfo | CephAgentError]  # mon host -> its agent's answer or failure


def agent_token(settings: CoordinatorSettings) -> str:
    if not settings.cephagent_token:
        raise NotConfigured()
    return settings.cephagent_token.get_secret_value()


async def host_tokens(store: Store, settings: CoordinatorSettings) -> dict[str, str]:
    """Each ceph host's address -> its agent's own token (hosts whose token is unreadable are left out)."""
    out = {}
    for host in await all_hosts(store):
        if host.kind == "ceph":
            with contextlib.suppress(credentials.CredentialError, NoSecretKey):
                if (token := agent_token_of(settings, host)) is not None:
                    out[host.address] = token
    return out


def agent_url(settings: CoordinatorSettings, host: str) -> str:
    return http_url(settings.tls.scheme, host, settings.cephagent_port)


def agent_error(e: CephAgentError, field: str | None = None) -> CephError:
    """An agent's failure as the coordinator's answer: its 4xx as they are, a rejected token or a 5xx as 502."""
    if e.code == "unauthorized":
        return AgentUnauthorized(reason=e.message)
    status = e.status if 400 <= e.status < 600 and e.status != 500 else 502
    return AgentFailed(status, e.code, e.message, field if field is not None else e.field)


class Agents:
    """The cephagent clients of one operation, sharing one HTTP session; use as `async with`. With the `store`,
    each agent gets its own host's token; without it (or for an agent of no ceph host) `cephagent_token`."""

    def __init__(self, settings: CoordinatorSettings, timeout: float = 60, store: Store | None = None):
        self.settings, self.store = settings, store
        if store is None:
            agent_token(settings)  # nothing else to present
        self.tokens: dict[str, str] = {}
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Agents:
        if self.store is not None:
            self.tokens = await host_tokens(self.store, self.settings)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.client(self.settings.tls) or True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def token(self, host: str) -> str | None:
        """What the agent on `host` takes: its own token, else the shared one."""
        return self.tokens.get(host) or revealed(self.settings.cephagent_token)

    def client(self, host: str, timeout: float | None = None) -> CephAgentClient:
        token = self.token(host)
        if token is None:
            raise NoAgentToken(host=host)
        return CephAgentClient(agent_url(self.settings, host), token, self._session, timeout or self.timeout)

    async def call(self, record: StorageRecord, fn: Callable[[CephAgentClient], Awaitable[T]],
                   first_host: str | None = None) -> tuple[T, str]:
        """`fn` on the first agent of the storage that answers; the result and that agent's mon host.

        Only an unreachable agent or cluster moves on to the next one; any other error is the answer.
        """
        hosts = list(dict.fromkeys([*([first_host] if first_host else []), *record.hosts]))
        last: CephAgentError | None = None
        for host in hosts:
            try:
                return await fn(self.client(host)), host
            except CephAgentError as e:
                if e.code not in FAILOVER_CODES:
                    raise agent_error(e) from e
                last = e
        assert last is not None, "a storage has at least one mon"
        raise AgentFailed(last.status if last.status >= 500 else 502, last.code,
                          f"no cephagent of {record.title} answered: {last.message}")

    async def survey(self, record: StorageRecord, timeout: float = 10) -> Survey:
        """Every mon host's agent asked for the cluster at once: host -> its answer or its error (no answer,
        or one of the wrong shape, is `AgentUnreachable`)."""
        hosts = record.hosts
        answers = await asyncio.gather(*(self.client(h, timeout).cluster() for h in hosts), return_exceptions=True)
        out: Survey = {}
        for host, answer in zip(hosts, answers, strict=True):
            if isinstance(answer, BaseException) and not isinstance(answer, CephAgentError):
                raise answer  # a bug of ours: an agent's answer of the wrong shape is AgentUnreachable already
            out[host] = answer
        return out
