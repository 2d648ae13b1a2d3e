"""agentkit.link against a fake coordinator on loopback: the stream (lines of any size), resume, heartbeats,
upload (backing off when it makes no progress) and failures.

The real coordinator (restarts, etcd compaction, exactly-once storage) is in tests/functional/agentkit.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from aiohttp import web

from agentkit.journal import Journal
from agentkit.link import Link, LinkError, lines
from agentkit.model import Held, HostFacts, L2Spec, VmSpec

L2 = {"uuid": "0123456789ab", "name": "phys", "physical_interface": "eth1"}
VM = {"uuid": "x", "name": "valid"}
BIG = "x" * (600 * 1024)  # one user-data tag of 600 KiB: past aiohttp's 512 KiB readline limit


class FakeCoordinator:
    """The host endpoints of the coordinator. Each stream request plays the next script of messages; the last
    one stays open. `connect_status` answers /connect."""

    def __init__(self, scripts: list[list[dict[str, Any]]], connect_status: int = 200, seq: int = 0,
                 renewal: dict[str, float] | None = None):
        self.scripts = scripts
        self.connect_status = connect_status
        self.renewal = renewal or {}  # when the connect answer says to renew the token
        self.renewals = 0
        self.seq = seq  # the host's sequence stored (`/hs/oseq/<host>`): events at or below it are not stored
        self.stored: list[dict[str, Any]] = []  # the bodies stored, in order
        self.connects: list[dict[str, Any]] = []
        self.since: list[str] = []
        self.timelines: list[str | None] = []
        self.heartbeats = 0
        self.dates: list[str | None] = []  # the Date each connect and heartbeat came with
        self.observed: list[list[int]] = []
        self.auth: set[str | None] = set()
        self.url = ""
        self.closing = asyncio.Event()  # ends the streams held open

    async def connect(self, request: web.Request) -> web.Response:
        self.auth.add(request.headers.get("Authorization"))
        self.dates.append(request.headers.get("Date"))
        self.connects.append(await request.json())
        if self.connect_status != 200:
            return web.Response(status=self.connect_status, text="no such host")
        return web.json_response({"heartbeat_interval": 0.05, **self.renewal})

    async def renew(self, request: web.Request) -> web.Response:
        self.renewals += 1
        return web.json_response({"token": f"tok{self.renewals}"})

    async def heartbeat(self, request: web.Request) -> web.Response:
        self.heartbeats += 1
        self.dates.append(request.headers.get("Date"))
        return web.Response(status=204)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.since.append(request.query["since"])
        self.timelines.append(request.query.get("timeline"))
        n = len(self.since) - 1
        r = web.StreamResponse()
        await r.prepare(request)
        for msg in self.scripts[min(n, len(self.scripts) - 1)]:
            await r.write(json.dumps(msg).encode() + b"\n")
        if n >= len(self.scripts) - 1:
            await self.closing.wait()  # the last script: the stream stays open until the test ends
        return r

    async def observed_events(self, request: web.Request) -> web.Response:
        """As the coordinator: a batch with a body it cannot take is refused whole, naming that event; the
        others are stored once (those above the host's sequence) and the sequence is the answer."""
        events = (await request.json())["events"]
        self.observed.append([e["seq"] for e in events])
        bad = next((i for i, e in enumerate(events) if e["body"].get("bad")), None)
        if bad is not None:
            error = {"code": "invalid", "message": "not a vm body", "field": f"events.{bad}.body.bad"}
            return web.json_response({"error": error}, status=400)
        self.stored += [e["body"] for e in events if e["seq"] > self.seq]
        self.seq = max(self.seq, *(e["seq"] for e in events))
        return web.json_response({"acked": self.seq})


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[FakeCoordinator], Any]]:
    runners: list[tuple[FakeCoordinator, web.AppRunner]] = []

    async def start(fake: FakeCoordinator) -> FakeCoordinator:
        app = web.Application()
        app.router.add_post("/v1/hosts/{uuid}/connect", fake.connect)
        app.router.add_post("/v1/hosts/{uuid}/heartbeat", fake.heartbeat)
        app.router.add_get("/v1/hosts/{uuid}/stream", fake.stream)
        app.router.add_post("/v1/hosts/{uuid}/observed", fake.observed_events)
        app.router.add_post("/v1/hosts/{uuid}/token/renew", fake.renew)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append((fake, runner))
        fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        return fake

    yield start
    for fake, runner in runners:
        fake.closing.set()
        await runner.cleanup()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, object]]] = []

    async def __call__(self, state: dict[str, object], rev: int) -> None:
        self.calls.append((rev, dict(state)))


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def facts() -> HostFacts:
    return HostFacts(hostname="kvm1", agent_version="1.0")


async def running(link: Link) -> AsyncIterator[asyncio.Task[None]]:
    """The link, and its journal's writer (the agent runs both)."""
    task, writer = asyncio.create_task(link.run()), asyncio.create_task(link.journal.run())
    try:
        yield task
    finally:
        task.cancel()
        writer.cancel()
        await asyncio.gather(task, writer, return_exceptions=True)


async def test_the_stream_builds_the_desired_state_and_resumes_where_it_left(serve, tmp_path):
    fake = await serve(FakeCoordinator([
        [{"type": "snapshot", "rev": 5, "items": {"l2/a": L2, "vm/bad": {"uuid": "x"}, "config/k": 1,
                                                  "vm/newer": {"uuid": "n", "name": "n", "numa": {"nodes": 2}}}},
         {"type": "changes", "rev": 7, "puts": {"l2/b": {**L2, "name": "b"}}, "deletes": ["l2/a"]},
         {"type": "progress", "rev": 9}],  # then the stream ends: the link reconnects
        [{"type": "changes", "rev": 10, "puts": {"l2/b": {"uuid": "broken"}, "vm/bad": VM}, "deletes": []},
         {"type": "snapshot", "rev": 11, "items": {"l2/b": {"uuid": "broken"}, "vm/bad": {"uuid": "x"}}}],
    ]))
    rec, connected = Recorder(), []
    link = Link(fake.url, "h1", "tok", Journal(tmp_path), facts, rec,
                on_connect=lambda: connected.append(link.connected))
    async for _ in running(link):
        await until(lambda: len(rec.calls) == 4)
    assert [rev for rev, _ in rec.calls] == [5, 7, 10, 11]
    first, second, third, fourth = (state for _, state in rec.calls)
    assert set(first) == {"l2/a", "vm/bad", "vm/newer", "config/k"}
    assert first["vm/bad"] == Held("name: Field required")  # the invalid VM, never valid here: left as it is
    assert isinstance(first["l2/a"], L2Spec)
    assert first["vm/newer"] == VmSpec(uuid="n", name="n")  # a newer coordinator's field is read past, the VM kept
    assert set(second) == {"l2/b", "vm/bad", "vm/newer", "config/k"}
    b = second["l2/b"]
    assert third == {"config/k": 1, "vm/newer": VmSpec(uuid="n", name="n"), "vm/bad": VmSpec.model_validate(VM),
                     "l2/b": b}  # an invalid update leaves the last valid value in force
    assert fourth == {"l2/b": b, "vm/bad": VmSpec.model_validate(VM)}  # so does a snapshot (a resync)
    assert fake.since == ["0", "9"] and len(fake.connects) == 2  # resumed after the progress revision
    assert connected == [True, True]  # told after each connect, once connected
    assert fake.connects[0] == facts().model_dump() and fake.auth == {"Bearer tok"}
    assert link.rev == 11 and link.stream_lines == 5


async def test_a_revision_is_resumed_from_with_the_timeline_its_snapshot_named(serve, tmp_path):
    """After a restore of etcd the coordinator's revisions count again from the backup's: the snapshot says
    which restore its revision belongs to, and the link resumes with both."""
    fake = await serve(FakeCoordinator([
        [{"type": "snapshot", "rev": 50, "items": {"config/k": 1}}],
        [{"type": "snapshot", "rev": 12, "items": {"config/k": 2}, "timeline": "t1"},
         {"type": "changes", "rev": 13, "puts": {"config/k": 3}, "deletes": []}],
        [],
    ]))
    rec = Recorder()
    link = Link(fake.url, "h1", "tok", Journal(tmp_path), facts, rec)
    async for _ in running(link):
        await until(lambda: len(fake.since) == 3)
    assert [rev for rev, _ in rec.calls] == [50, 12, 13] and rec.calls[-1][1] == {"config/k": 3}
    assert list(zip(fake.since, fake.timelines, strict=True)) == [("0", None), ("50", None), ("13", "t1")]


async def test_heartbeats_follow_the_coordinators_interval_and_carry_this_hosts_clock(serve, tmp_path):
    fake = await serve(FakeCoordinator([[]]))
    link = Link(fake.url, "h1", "tok", Journal(tmp_path), facts, Recorder())
    async for _ in running(link):
        await until(lambda: fake.heartbeats >= 3)
        assert link.connected and link.heartbeat_interval == 0.05
    sent = [parsedate_to_datetime(d).timestamp() for d in fake.dates if d]  # the coordinator shows the offset
    assert len(sent) == len(fake.dates) >= 4 and all(abs(time.time() - t) < 5 for t in sent)


async def test_the_token_is_renewed_when_the_coordinator_says_whatever_this_hosts_clock_says(serve, tmp_path):
    """A coordinator whose clock is an hour ahead of this host's: its renewal instant lies an hour ahead here,
    but the delay it gives is what the link goes by (an hour late, the token would have expired first)."""
    fake = await serve(FakeCoordinator([[]], renewal={"token_renew_at": time.time() + 3600.05,
                                                      "token_renew_in": 0.05}))
    kept: list[str] = []
    link = Link(fake.url, "h1", "tok", Journal(tmp_path), facts, Recorder(), on_token=kept.append)
    async for _ in running(link):
        await until(lambda: len(fake.connects) >= 2)
    assert kept[0] == "tok1" and {"Bearer tok", "Bearer tok1"} <= fake.auth  # connected again with the new one


async def test_the_journal_is_uploaded_in_order_and_trimmed_on_ack(serve, tmp_path):
    fake = await serve(FakeCoordinator([[]]))
    journal = Journal(tmp_path)
    for i in range(3):
        journal.append("vm", f"v{i}", {"n": i})
    link = Link(fake.url, "h1", "tok", journal, facts, Recorder())
    async for _ in running(link):
        await until(lambda: journal.acked == 3)
        journal.append("vm", "v3", {"n": 3})  # sent as soon as it is journaled
        await until(lambda: journal.acked == 4)
    assert fake.observed == [[1, 2, 3], [4]] and journal.acked == 4
    assert Journal(tmp_path).pending == []


async def test_an_event_the_coordinator_refuses_holds_back_no_other(serve, tmp_path):
    fake = await serve(FakeCoordinator([[]]))
    journal = Journal(tmp_path)
    for i in range(5):
        journal.append("vm", f"v{i}", {"n": i, "bad": i == 2})  # e.g. a field only a newer coordinator knows
    link = Link(fake.url, "h1", "tok", journal, facts, Recorder())
    async for _ in running(link):
        await until(lambda: journal.acked == 5)
    # the events before the refused one first, then the refused one alone is dropped, then the rest
    assert fake.observed == [[1, 2, 3, 4, 5], [1, 2], [3, 4, 5], [4, 5]], fake.observed
    assert Journal(tmp_path).pending == []


async def test_a_journal_behind_the_coordinators_sequence_has_its_events_stored_after_it(serve, tmp_path):
    fake = await serve(FakeCoordinator([[]], seq=50))  # the host reported up to 50 before its state directory
    journal = Journal(tmp_path)                         # was restored from an older disk
    for i in range(3):
        journal.append("vm", f"v{i}", {"n": i})
    link = Link(fake.url, "h1", "tok", journal, facts, Recorder())
    async for _ in running(link):
        await until(lambda: journal.acked == 53)
        journal.append("vm", "v3", {"n": 3})
        await until(lambda: journal.acked == 54)
    assert fake.stored == [{"n": i} for i in range(4)]  # none lost, in order
    assert fake.observed == [[1, 2, 3], [51, 52, 53], [54]]  # no upload loop meanwhile


async def test_a_refused_connect_is_retried_with_backoff(serve, tmp_path):
    fake = await serve(FakeCoordinator([[]], connect_status=401))
    link = Link(fake.url, "h1", "tok", Journal(tmp_path), facts, Recorder())
    async for task in running(link):
        await until(lambda: len(fake.connects) >= 3)
        assert not link.connected and not task.done()


async def test_a_bug_in_the_consumer_ends_the_link(serve, tmp_path):
    """Not retried as if the coordinator were down: the process's supervisor sees the crash."""
    fake = await serve(FakeCoordinator([[{"type": "snapshot", "rev": 1, "items": {}}]]))

    async def buggy(state: dict[str, object], rev: int) -> None:
        raise KeyError("bug")

    link = Link(fake.url, "h1", "tok", Journal(tmp_path), facts, buggy)
    with pytest.raises(ExceptionGroup) as e:
        await asyncio.wait_for(link.run(), 5)
    assert e.group_contains(KeyError) and len(fake.connects) == 1


class Chunks:
    """A stream that hands out the given chunks (what `readany` returns as data arrives)."""

    def __init__(self, *chunks: bytes):
        self.chunks = list(chunks)

    async def readany(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


async def collect(content: Chunks, limit: int) -> list[bytes]:
    return [line async for line in lines(content, limit)]


async def test_lines_of_any_size_across_chunks():
    big = b"y" * 3_000_000
    got = await collect(Chunks(b'{"a":1}\n{"b"', b":2}\n" + big[:1000], big[1000:] + b"\n", b"cut"), 2**22)
    assert got == [b'{"a":1}', b'{"b":2}', big]  # a last line without its newline is the stream cut: dropped
    with pytest.raises(LinkError, match="exceeds 1000 bytes"):
        await collect(Chunks(b"z" * 600, b"z" * 600, b"\n"), 1000)


async def test_a_large_snapshot_line_is_applied_and_a_failing_ack_backs_off(serve, tmp_path):
    fake = await serve(FakeCoordinator([[{"type": "snapshot", "rev": 7, "items": {"config/big": BIG}}]]))
    rec, journal = Recorder(), Journal(tmp_path)
    link = Link(fake.url, "h1", "tok", journal, facts, rec)
    async for task in running(link):
        await until(lambda: rec.calls == [(7, {"config/big": BIG})])
        journal.acked_path.unlink(missing_ok=True)
        journal.acked_path.mkdir()  # the acknowledgement cannot be recorded
        for i in range(500):
            journal.append("lease", f"nic-{i}", {"state": "bound"})
        await asyncio.sleep(2.0)
        assert 1 <= len(fake.observed) <= 4, f"{len(fake.observed)} uploads in 2 s: not backing off"
        assert journal.acked == 0 and len(journal.pending) == 500
        journal.acked_path.rmdir()
        await until(lambda: journal.pending == [], timeout=15)
        assert journal.acked == 500 and max(map(len, fake.observed)) == 100  # within etcd's 128 ops per txn
        assert not task.done()
