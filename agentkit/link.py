"""An agent's link to the coordinator: connect, heartbeat, the desired-state stream, observed upload.

The link keeps the host's desired state as a dict (stream key -> validated object) and calls
`on_state(state)` after every snapshot or change batch; consumers reconcile level-triggered from the
whole dict. A value the agent's models reject leaves the object as it was (its last valid value, else
`Held`), never absent. Reconnects resume from the last revision; the journal is uploaded in order and trimmed on
acknowledgement. Nothing here knows about libvirt or networks.

A revision is resumed from only on its timeline: the coordinator names it in a snapshot once etcd's data
was restored from a backup (the restored data counts its revisions again from the backup's), and the
link sends it back with the revision, so a link from before a restore gets a snapshot of the restored
state whichever of the two revisions is higher.

Stream lines may be of any size up to `max_line` (default `MAX_LINE`, 256 MiB): the largest the
coordinator sends is the snapshot of a host's whole view, tens of MiB for a host with hundreds of VMs
(user data capped at 16 KiB) and a cloud's DNS records; aiohttp's own `readline` stops at twice its
read buffer (512 KiB), which one large user-data tag used to exceed. A line over the bound ends the
session (logged, reconnected with backoff) instead of the process; lines over `BIG_LINE` are parsed in
a worker thread. An upload that makes no progress (refused, or its acknowledgement cannot be
recorded) is retried with capped backoff, never in a tight loop; an event the coordinator refuses by
itself (a 400 naming `events.<i>`) is dropped with an error once the events before it are stored.

Over TLS (`ssl`: the context that verifies the coordinator). When the coordinator gives the token a
lifetime, the presence renews it when told to (`token_renew_in` seconds after the connect answer: a delay,
not an instant, so this host's clock being off the coordinator's does not move it), hands the new one to
`on_token` to keep, and connects again with it. Should the answer be lost, the old token still works
until it expires, and the coordinator's next connect answer says to renew at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from email.utils import formatdate
from typing import Any

import aiohttp

from agentkit.journal import BATCH, Journal
from agentkit.model import Held, HostFacts, ObservedEvent, parse_stream_item
from agentkit.supervise import together

log = logging.getLogger(__name__)
OnState = Callable[[dict[str, object], int], Awaitable[None]]
OnToken = Callable[[str], None]
MAX_LINE = 256 * 2**20
BIG_LINE = 2**20
UPLOAD_BACKOFF_MAX = 30.0
_EVENT_FIELD = re.compile(r"events\.(\d+)(\.|$)")  # the field of an upload's 400: which event


class Presence:
    """An agent's presence at the coordinator: connect with its facts (its version), then heartbeats; after
    any failure, connect again with jittered backoff. `Link` adds the state stream and the upload."""

    def __init__(self, url: str, host_uuid: str, token: str, facts: Callable[[], HostFacts],
                 ssl: ssl.SSLContext | None = None, on_token: OnToken | None = None,
                 on_connect: Callable[[], None] = lambda: None):
        self.url = url.rstrip("/")
        self.host = host_uuid
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}  # sent with every request (renewals replace it)
        self.ssl = ssl
        self.on_token = on_token
        self.on_connect = on_connect  # after every (re)connect: what the coordinator keeps may be out of date
        self.renew_in: float | None = None  # seconds after the last connect answer
        self.facts = facts
        self.connected = False
        self.heartbeat_interval = 2.0

    def _u(self, path: str) -> str:
        return f"{self.url}/v1/hosts/{self.host}{path}"

    async def run(self) -> None:
        """Run forever: (re)connect with jittered backoff; run the session's loops concurrently."""
        async with self._session() as session:
            delay = 0.2
            while True:
                try:
                    await self._connect(session)
                    delay = 0.2
                    await self._session_loops(session)
                except* (aiohttp.ClientError, OSError, TimeoutError, asyncio.IncompleteReadError, LinkError) as down:
                    log.warning("coordinator link down: %s", "; ".join(str(e) for e in down.exceptions))
                self.connected = False
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 5.0)

    def _session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        return aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=self.ssl or True))

    async def _connect(self, session: aiohttp.ClientSession) -> None:
        async with session.post(self._u("/connect"), json=self.facts().model_dump(), headers=self._dated()) as r:
            await _check(r)
            answer = await r.json()
        self.heartbeat_interval = answer["heartbeat_interval"]
        self.renew_in = answer.get("token_renew_in")
        if self.renew_in is None and answer.get("token_renew_at") is not None:  # an older coordinator: an instant
            self.renew_in = answer["token_renew_at"] - time.time()
        self.connected = True
        log.info("connected to coordinator", extra={"fields": {"url": self.url}})
        self.on_connect()

    def _loops(self, session: aiohttp.ClientSession) -> list[Coroutine[Any, Any, None]]:
        return [self._heartbeat(session)]

    async def _session_loops(self, session: aiohttp.ClientSession) -> None:
        """Until one loop fails: then the others are cancelled and the failures raised together."""
        tasks = [asyncio.create_task(loop) for loop in self._loops(session)]
        if self.renew_in is not None:
            tasks.append(asyncio.create_task(self._renew_token(session, self.renew_in)))
        await together(tasks)

    async def _heartbeat(self, session: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            async with session.post(self._u("/heartbeat"), timeout=aiohttp.ClientTimeout(total=10),
                                    headers=self._dated()) as r:
                await _check(r)

    def _dated(self) -> dict[str, str]:
        """The credential and this host's clock (`Date`): the coordinator shows how far it is off its own."""
        return {**self.headers, "Date": formatdate(usegmt=True)}

    async def _renew_token(self, session: aiohttp.ClientSession, delay: float) -> None:
        """In `delay` seconds, a new token; the session then ends and the presence connects again with it. The
        request is shielded: a session that ends meanwhile (its stream failing) must not drop its answer, the
        only copy of the new token."""
        await asyncio.sleep(max(delay, 0.0))
        await asyncio.shield(self._renew(session))
        raise LinkError("reconnecting with the renewed token")

    async def _renew(self, session: aiohttp.ClientSession) -> None:
        async with session.post(self._u("/token/renew"), timeout=aiohttp.ClientTimeout(total=10),
                                headers=self.headers) as r:
            await _check(r)
            token = (await r.json())["token"]
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}
        if self.on_token is not None:
            self.on_token(token)
        log.info("agent token renewed")

    async def certificate(self, csr: bytes) -> str:
        """The coordinator's certificate (PEM chain) for the key of `csr` (agentkit.identity asks)."""
        async with self._session() as session, session.post(
                self._u("/certificate"), json={"csr": csr.decode()}, headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=30)) as r:
            await _check(r)
            chain: str = (await r.json())["certificate"]
        return chain


class Link(Presence):
    """Presence plus the desired-state stream and the observed-state upload."""

    def __init__(self, url: str, host_uuid: str, token: str, journal: Journal,
                 facts: Callable[[], HostFacts], on_state: OnState, max_line: int = MAX_LINE,
                 ssl: ssl.SSLContext | None = None, on_token: OnToken | None = None,
                 on_connect: Callable[[], None] = lambda: None):
        super().__init__(url, host_uuid, token, facts, ssl, on_token, on_connect)
        self.journal = journal
        self.on_state = on_state
        self.state: dict[str, object] = {}
        self.rev = 0
        self.timeline = ""  # of `rev`, as the last snapshot named it ("": etcd's data never restored)
        self.stream_lines = 0
        self.max_line = max_line

    def _loops(self, session: aiohttp.ClientSession) -> list[Coroutine[Any, Any, None]]:
        return [self._stream(session), self._heartbeat(session), self._upload(session)]

    async def _stream(self, session: aiohttp.ClientSession) -> None:
        idle = aiohttp.ClientTimeout(total=None, sock_read=30)
        since = {"since": str(self.rev), **({"timeline": self.timeline} if self.timeline else {})}
        async with session.get(self._u("/stream"), params=since, timeout=idle, headers=self.headers) as r:
            await _check(r)
            async for line in lines(r.content, self.max_line):
                self.stream_lines += 1
                await self._apply(await asyncio.to_thread(json.loads, line) if len(line) > BIG_LINE
                                  else json.loads(line))
        raise LinkError("stream ended")

    async def _apply(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "progress":
            self.rev = max(self.rev, msg["rev"])
            return
        if kind == "snapshot":
            before = self.state
            self.state = {k: _parse(k, v, before.get(k)) for k, v in msg["items"].items()}
            self.timeline = msg.get("timeline", "")
        elif kind == "changes":
            for k in msg["deletes"]:
                self.state.pop(k, None)
            for k, v in msg["puts"].items():
                self.state[k] = _parse(k, v, self.state.get(k))
        self.rev = msg["rev"]
        log.debug("stream %s rev %d", kind, self.rev)
        await self.on_state(self.state, self.rev)

    async def _upload(self, session: aiohttp.ClientSession) -> None:
        """Send the journal's oldest events until none is left; back off while nothing moves."""
        delay = 0.0
        limit = BATCH
        while True:
            batch = self.journal.batch(limit)
            if not batch:
                self.journal.changed.clear()
                await self.journal.changed.wait()
                continue
            body = {"events": [e.model_dump() for e in batch]}
            async with session.post(self._u("/observed"), json=body, timeout=aiohttp.ClientTimeout(total=15),
                                    headers=self.headers) as r:
                refused = await _refused_event(r, len(batch))
                if refused is None:
                    await _check(r)
                    acked = (await r.json())["acked"]
            if refused is not None:
                limit = await self._isolate(batch, *refused)
                continue
            limit = BATCH
            try:
                await self.journal.ack(acked)
                moved = acked >= batch[0].seq
            except OSError as e:
                log.error("acknowledgement %d not recorded: %s", acked, e)
                moved = False
            if moved:
                delay = 0.0
                continue
            delay = min(max(delay * 2, 0.5), UPLOAD_BACKOFF_MAX)
            log.warning("observed upload made no progress (acked %d, oldest %d); next try in %.1f s",
                        acked, batch[0].seq, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))


    async def _isolate(self, batch: list[ObservedEvent], index: int, reason: str) -> int:
        """The coordinator refused `batch[index]` (its body is not what its kind says: an agent newer or
        older than the coordinator, or a bug): the events before it go first; the refused one, once it is the
        oldest, is dropped with an error in the log, so one report never holds back every later one.
        The size of the next batch."""
        if index > 0:
            return index
        ev = batch[0]
        log.error("the coordinator refused observed event %d (%s %s), dropped: %s", ev.seq, ev.kind, ev.id, reason)
        await self.journal.ack(ev.seq)
        return BATCH


class LinkError(Exception):
    pass


async def _refused_event(r: aiohttp.ClientResponse, sent: int) -> tuple[int, str] | None:
    """(index, reason) when an upload of `sent` events was refused (400) for one of them, which the error's
    field names (`events.<index>.…`); None for any other answer."""
    if r.status != 400:
        return None
    with contextlib.suppress(ValueError, AttributeError, aiohttp.ContentTypeError):
        error = (await r.json()).get("error") or {}
        field, message = str(error.get("field") or ""), str(error.get("message") or "")
        if (m := _EVENT_FIELD.match(field)) is not None and int(m.group(1)) < sent:
            return int(m.group(1)), message
    return None


async def lines(content: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """The newline-separated lines of `content`, each of any length up to `limit` bytes (LinkError above);
    a last line without its newline (the stream cut) is dropped. Parts are joined once per line."""
    parts: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            size += len(piece)
            if size > limit:
                raise LinkError(f"a stream line exceeds {limit} bytes")
            if piece:
                parts.append(piece)
            if end < 0:
                break
            yield b"".join(parts)
            parts, size, start = [], 0, end + 1


def _parse(key: str, value: object, before: object) -> object:
    """The state's entry for `key`: `value` validated; if it is invalid, the entry `before` it (the last
    valid value: the object stays as it was), else `Held` (left as it is, whatever it is)."""
    try:
        item, newer = parse_stream_item(key, value)
    except ValueError as e:
        if before is not None and not isinstance(before, Held):
            log.error("invalid desired item %s: its last valid value stays in force: %s", key, e)
            return before
        log.error("invalid desired item %s: its object is held as it is: %s", key, e)
        return Held.of(e)
    if newer:
        log.warning("desired item %s: fields unknown to this agent left out (%s): a newer coordinator's, known "
                    "once this agent is upgraded", key, ", ".join(newer))
    return item


async def _check(r: aiohttp.ClientResponse) -> None:
    if r.status >= 400:
        raise LinkError(f"{r.method} {r.url.path}: HTTP {r.status} {await r.text()}")
