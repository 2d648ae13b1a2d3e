"""How the coordinator reaches an image store, and how a store's failures become the coordinator's.

A store's agent listens at `https://<host address>:<imagestore_port>` (verified with the CA, like the
cephagents) and takes its host's agent token, which the host record keeps encrypted (hosts.token_fields).
Its 4xx answers pass through as they are; a rejected token, a 5xx or no answer is a 502 naming the store.
"""

from __future__ import annotations

import aiohttp

from agentkit import tls
from agentkit.addr import http_url
from agentkit.errors import HostStackError, RemoteError
from coordinator.domain import credentials
from coordinator.domain.errors import NotConfigured
from coordinator.domain.hosts import Host, agent_token_of
from coordinator.settings import CoordinatorSettings
from imagestore.client import ImageStoreClient
from imagestore.errors import ImageStoreError


class StoreFailed(RemoteError):
    """What an image store answered (or that it did not), as the coordinator's error."""


def store_url(settings: CoordinatorSettings, host: Host) -> str:
    return http_url(settings.tls.scheme, host.address, settings.imagestore_port)


def store_token(settings: CoordinatorSettings, host: Host) -> str:
    try:
        token = agent_token_of(settings, host)
    except credentials.CredentialError as e:
        raise NotConfigured(f"image store host {host.name}: its token cannot be read ({e}); issue a new one: "
                            f"hs deploy token {host.name}, then hs deploy imagestore {host.name}") from e
    if token is None:
        raise NotConfigured(f"image store host {host.name} has no token yet: hs deploy imagestore {host.name}")
    return token


def store_error(host: Host, e: ImageStoreError, field: str | None = None) -> HostStackError:
    if e.code == "unauthorized":
        return StoreFailed(502, "store_unauthorized", f"image store {host.name} refused the coordinator's token "
                           f"(redeploy it: hs deploy imagestore {host.name})")
    if 400 <= e.status < 500:
        return StoreFailed(e.status, e.code, e.message, field if field is not None else e.field)
    return StoreFailed(502, e.code, f"image store {host.name}: {e.message}")


class Stores:
    """Clients of image stores sharing one HTTP session; use as `async with`."""

    def __init__(self, settings: CoordinatorSettings, timeout: float = 30):
        self.settings, self.timeout = settings, timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Stores:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.client(self.settings.tls) or True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def client(self, host: Host, timeout: float | None = None) -> ImageStoreClient:
        return ImageStoreClient(store_url(self.settings, host), store_token(self.settings, host), self._session,
                                timeout or self.timeout)
