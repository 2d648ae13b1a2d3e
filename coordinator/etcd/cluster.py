"""The etcd members one coordinator process talks to, and the one loop every request goes through.

Requests stick to one member (picked at random per process, so replicas spread over the cluster) until
it fails; a failing member is then *suspected* for `SUSPECT_FOR` seconds and the request moves on to the
next member. A request has the configured `timeout` in all, each attempt at most `attempt_timeout` of
it, so a member that hangs (SIGSTOP, a stuck disk) costs one attempt, never the whole request. Once every member has
failed in one request, the loop pauses (50 ms, doubling up to 500 ms) and goes round again until the
deadline, then raises `StoreUnavailable`.

Whether an attempt may be repeated is the caller's business (`store.py` says why each one may): this
loop only repeats. With etcd auth on, the token from `Authenticate` rides along as metadata; an answer
saying it is unknown (it expired, or the member restarted and forgot it) gets a new one, and so does a
member that failed to answer: etcd 3.4 restored from a backup does not refuse a simple token that names
a raft index it has not reached yet, it holds the request until its deadline (waiting for that index),
so a token from before a restore looks like a hung member. One more `Authenticate` per failure is cheap.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from coordinator.etcd.endpoints import Endpoint, EtcdConfig, parse
from coordinator.etcd.errors import Compacted, Fault, StoreUnavailable, describe, fault

log = logging.getLogger(__name__)
T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]
SUSPECT_FOR = 5.0
FIRST_PAUSE, MAX_PAUSE = 0.05, 0.5
# Reconnect to a member that is back within a second (gRPC's default backoff grows to two minutes);
# responses as large as etcd can send (its clients' default); our own retries only; connections of
# this channel only (gRPC would share one with another channel to the same target, also a broken one).
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 1000), ("grpc.max_receive_message_length", 2**31 - 1),
                   ("grpc.enable_retries", 0), ("grpc.use_local_subchannel_pool", 1)]


class Unanswered(Exception):
    """A single attempt (`call(..., once=True)`) got no answer: it may or may not have taken effect."""


class Member:
    """One endpoint: its channel and stubs, and whether requests should avoid it for now."""

    def __init__(self, endpoint: Endpoint, credentials: grpc.ChannelCredentials | None):
        self.endpoint = endpoint
        if endpoint.tls:
            assert credentials is not None
            self.channel = grpc.aio.secure_channel(endpoint.target, credentials, CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.insecure_channel(endpoint.target, CHANNEL_OPTIONS)
        self.kv = rpc.KVStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.auth = rpc.AuthStub(self.channel)
        self.suspect_until = 0.0
        self.suspected = asyncio.Event()  # set when a request found it failing: streams on it move away

    def __repr__(self) -> str:
        return f"Member({self.endpoint})"

    def suspect(self, why: str) -> None:
        if not self.suspected.is_set():
            log.warning("etcd member %s suspected for %.0f s: %s", self.endpoint, SUSPECT_FOR, why)
        self.suspect_until = time.monotonic() + SUSPECT_FOR
        self.suspected.set()

    def trust(self) -> None:
        if self.suspected.is_set():
            self.suspect_until = 0.0
            self.suspected = asyncio.Event()


class Cluster:
    def __init__(self, config: EtcdConfig):
        self.config = config
        self.timeout = config.timeout
        self.attempt_timeout = config.attempt_timeout
        self.members: list[Member] = []
        self.revision = 0  # the highest revision any answer carried: every later commit is above it
        self._current = 0
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()

    async def connect(self) -> None:
        """Make a channel per member (they connect on first use, so etcd may still be down)."""
        c = self.config
        if c.discovery_srv:
            from coordinator.etcd import srv  # dnslib only where SRV records are asked

            try:
                endpoints = await srv.discover(c.discovery_srv, c.discovery_srv_name, c.nameservers)
            except srv.DiscoveryFailed as e:
                raise StoreUnavailable(f"etcd discovery: {e}") from e
            log.info("etcd members from SRV records of %s: %s", c.discovery_srv, ", ".join(map(str, endpoints)))
        else:
            endpoints = parse(c.endpoints, c.tls.configured)
        creds = grpc.ssl_channel_credentials(*c.tls.read()) if any(e.tls for e in endpoints) else None
        self.members = [Member(e, creds) for e in endpoints]
        self._current = random.randrange(len(self.members)) if c.spread else 0

    async def close(self) -> None:
        for m in self.members:
            await m.channel.close()
        self.members = []

    @property
    def current(self) -> int:
        """The index of the member requests stick to."""
        return self._current

    def seen(self, response: Any) -> None:
        header = getattr(response, "header", None)
        if header is not None and header.revision > self.revision:
            self.revision = header.revision

    def pick(self, tried: set[Member]) -> Member | None:
        """The member to try next in a request: the current one unless suspected or already tried in
        it, else the next trusted one, else the one whose suspicion ends first; None once all were tried."""
        n, now = len(self.members), time.monotonic()
        untried = [m for i in range(n) if (m := self.members[(self._current + i) % n]) not in tried]
        if not untried:
            return None
        trusted = [m for m in untried if m.suspect_until <= now]
        member = trusted[0] if trusted else min(untried, key=lambda m: m.suspect_until)
        self._current = self.members.index(member)
        return member

    async def call(self, what: str, attempt: Callable[[Member, float, Metadata], Awaitable[T]], *,
                   once: bool = False, deadline: float | None = None) -> T:
        """`attempt(member, seconds, metadata)` until one answers, within the request's deadline (or the
        given one); with `once` a single attempt, Unanswered when it fails in a way another might mend."""
        deadline = deadline or time.monotonic() + self.timeout
        tried: set[Member] = set()
        pause, last = FIRST_PAUSE, "no attempt made"
        while (left := deadline - time.monotonic()) > 0:
            member = self.pick(tried)
            if member is None:
                await asyncio.sleep(min(pause, left))
                pause, tried = min(pause * 2, MAX_PAUSE), set()
                continue
            md: Metadata = ()
            try:
                md = await self.metadata(member, min(left, self.attempt_timeout))
                result = await attempt(member, min(deadline - time.monotonic(), self.attempt_timeout), md)
            except grpc.aio.AioRpcError as e:
                last = describe(e)
                self.failed(what, member, e, md)
                if once:
                    raise Unanswered(f"{member.endpoint}: {last}") from e
                tried.add(member)
                continue
            self.seen(result)
            member.trust()
            return result
        raise StoreUnavailable(f"etcd {what} failed: no member answered within {self.timeout:g} s ({last})")

    def failed(self, what: str, member: Member, e: grpc.aio.AioRpcError, md: Metadata | None = None) -> None:
        """Sort a failed attempt: raise what another attempt cannot mend, note what it may (`md`: the
        metadata it sent; None: whatever token is current was refused)."""
        kind = fault(e)
        if kind is Fault.COMPACTED:
            raise Compacted(0) from e
        if kind is Fault.FINAL:
            raise StoreUnavailable(f"etcd {what} failed: {describe(e)}") from e
        if kind is Fault.TOKEN:
            self.forget_token(md)
        elif kind is Fault.MEMBER:
            self.unanswered(member, describe(e), md)

    def unanswered(self, member: Member, why: str, md: Metadata | None = None) -> None:
        """`member` failed or hung: requests avoid it for a while, and the token is not trusted either
        (see the module's docstring)."""
        member.suspect(why)
        self.forget_token(md)

    def forget_token(self, md: Metadata | None) -> None:
        """The next attempt authenticates again, unless another one already has since (`md`: the
        metadata of the failed attempt; None: whatever token is current failed)."""
        if md is None or self._token == dict(md).get("token"):
            self._token = None

    async def metadata(self, member: Member, timeout: float) -> Metadata:
        """The auth token to send (authenticating first when there is none yet)."""
        if self.config.user is None:
            return ()
        if self._token is not None:  # the common case: no lock to take per request
            return (("token", self._token),)
        async with self._auth_lock:
            if self._token is None:
                req = rpc.AuthenticateRequest(name=self.config.user, password=self.config.password or "")
                self._token = (await member.auth.Authenticate(req, timeout=timeout)).token
            return (("token", self._token),)
