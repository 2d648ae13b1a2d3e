"""A watch that outlives the member serving it.

One gRPC watch stream per watch, asked with `hasleader` (etcd ends it when its member loses the
cluster's leader, as clientv3's WithRequireLeader does). When the stream breaks, is ended, or its member
goes quiet, the watch starts again on another member from the revision after the last one it handed
out, so a consumer sees every revision once and in order. Quiet is told apart from hung by asking for
progress after `PROBE_AFTER` seconds without a message (etcd 3.4 answers on the same stream) and at once when
a request found the member failing. `StoreUnavailable` only after no member took the watch for a
whole request deadline, or `Rewound` when etcd's data was restored from a backup under the watch: etcd
(asked through its leader) is behind what the watch handed out, so it will never send the revisions in
between; or, for a watch given the timeline it started on, every stream it opens finds etcd's data on
that timeline or the watch ends (coordinator/etcd/timeline.py: a restored etcd's own writes soon pass
the revisions handed out, and only the timeline tells).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import grpc
from aetcd import rpc, utils

from coordinator.etcd import timeline
from coordinator.etcd.cluster import FIRST_PAUSE, MAX_PAUSE, Cluster, Member, Metadata
from coordinator.etcd.errors import Compacted, Rewound, StoreUnavailable, describe

log = logging.getLogger(__name__)
PROBE_AFTER = 5.0  # seconds of silence after which a watch asks its member for progress


class _Quiet(Exception):
    """The member did not answer a progress request in time, or a request found it failing."""


class _Ended(Exception):
    """etcd ended the stream without an error (a member shutting down, or no leader any more)."""


class _Behind(Exception):
    """The member created the watch at a revision below the one the watch resumes after."""


async def watch(cluster: Cluster, prefix: str, start_revision: int, batches: Callable[[list[Any]], list[Any]],
                on: str | None = None) -> AsyncIterator[Any]:
    """Every revision's events under `prefix` from `start_revision` on, through `batches` (which turns
    one response's events into the consumer's per-revision batches, each with `.revision` on its items);
    given a timeline (`on`), only while etcd's data is on that one."""
    next_rev, tried, pause = start_revision, set[Member](), FIRST_PAUSE
    failing_since: float | None = None
    last = "no attempt made"
    while True:
        member = cluster.pick(tried)
        if member is None:
            if failing_since is not None and time.monotonic() - failing_since > cluster.timeout:
                raise StoreUnavailable(f"etcd watch on {prefix} failed: no member for {cluster.timeout:g} s ({last})")
            await asyncio.sleep(pause)
            pause, tried = min(pause * 2, MAX_PAUSE), set()
            continue
        stream = _stream(cluster, member, prefix, next_rev, on)
        try:
            while True:
                try:
                    events = await anext(stream)
                except _Behind as e:
                    last = describe(e)
                    if (now := await _revision(cluster)) < next_rev - 1:
                        cluster.revision = now  # what later commits are above again
                        raise Rewound(prefix, f"etcd is at revision {now}, behind revision {next_rev - 1} the "
                                              "watch handed out (restored from a backup?)") from None
                    break  # a follower that had not caught up yet: again
                except (grpc.aio.AioRpcError, _Quiet, _Ended, TimeoutError) as e:
                    last = describe(e)
                    _failed(cluster, member, prefix, e)
                    break
                failing_since, tried, pause = None, set(), FIRST_PAUSE
                for batch in batches(events):
                    yield batch
                    next_rev = batch[0].revision + 1
        finally:
            await stream.aclose()
        log.info("etcd watch on %s moves on from %s at revision %d: %s", prefix, member.endpoint, next_rev, last)
        failing_since = failing_since or time.monotonic()
        tried.add(member)


async def _revision(cluster: Cluster) -> int:
    """etcd's current revision, read through the leader (a linearizable read: no follower's lag)."""
    async def attempt(m: Member, timeout: float, md: Metadata) -> Any:
        return await m.kv.Range(rpc.RangeRequest(key=b"\0", count_only=True), timeout=timeout, metadata=md)
    return int((await cluster.call("revision", attempt)).header.revision)


async def _check_timeline(cluster: Cluster, prefix: str, expected: str) -> None:
    """Rewound unless etcd's data is on the `expected` timeline (a linearizable read, made once the stream
    exists: a restore after it would end the stream)."""
    async def attempt(m: Member, timeout: float, md: Metadata) -> Any:
        return await m.kv.Range(rpc.RangeRequest(key=timeline.KEY.encode()), timeout=timeout, metadata=md)
    resp = await cluster.call("timeline", attempt)
    found = timeline.of(json.loads(resp.kvs[0].value) if resp.kvs else None)
    if found != expected:
        cluster.revision = int(resp.header.revision)  # what later commits are above again
        raise Rewound(prefix, f"etcd's data is from another restore: timeline {found or 'original'!r}, the watch "
                              f"started on {expected or 'original'!r}")


def _failed(cluster: Cluster, member: Member, prefix: str, e: BaseException) -> None:
    if isinstance(e, grpc.aio.AioRpcError):
        cluster.failed(f"watch on {prefix}", member, e)
    else:
        cluster.unanswered(member, describe(e))


async def _stream(cluster: Cluster, member: Member, prefix: str, start: int,
                  on: str | None) -> AsyncGenerator[list[Any], None]:
    """The events of one watch stream on `member`: an empty list once etcd created the watch (on the
    timeline `on`, when given), then one list per response that carries events."""
    key = prefix.encode()
    md: Metadata = (*await cluster.metadata(member, cluster.attempt_timeout), ("hasleader", "true"))
    call = member.watch.Watch(metadata=md)
    try:
        create = rpc.WatchCreateRequest(key=key, range_end=utils.prefix_range_end(key), start_revision=start,
                                        prev_kv=True)
        await _write(call, rpc.WatchRequest(create_request=create))
        while True:
            resp = await _read(call, member, cluster)
            cluster.seen(resp)
            if resp.compact_revision:
                raise Compacted(resp.compact_revision)
            if resp.canceled:
                raise _Ended(resp.cancel_reason or "watch canceled by etcd")
            if resp.created and resp.header.revision < start - 1:
                raise _Behind(f"{member.endpoint} is at revision {resp.header.revision}, the watch resumes after "
                              f"{start - 1}")
            if resp.created and on is not None:
                await _check_timeline(cluster, prefix, on)
            if resp.created or resp.events:
                yield list(resp.events)
    finally:
        call.cancel()


async def _read(call: Any, member: Member, cluster: Cluster) -> Any:
    """The next response. After `PROBE_AFTER` seconds of silence, or at once when a request found the
    member failing, a progress request must be answered within an attempt's time."""
    read = asyncio.ensure_future(call.read())  # cancelling a read cancels the stream: only when giving up
    suspected = asyncio.ensure_future(member.suspected.wait())
    probed = False
    try:
        done, _ = await asyncio.wait({read, suspected}, timeout=PROBE_AFTER, return_when=asyncio.FIRST_COMPLETED)
        if read not in done:
            await _write(call, rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))
            probed = True
            done, _ = await asyncio.wait({read}, timeout=cluster.attempt_timeout)
            if read not in done:
                raise _Quiet(f"no answer from {member.endpoint} within {cluster.attempt_timeout:g} s")
    finally:
        suspected.cancel()
        if not read.done():
            read.cancel()
    resp = read.result()
    if resp is grpc.aio.EOF:
        raise _Ended("etcd closed the watch stream")
    if probed:
        member.trust()
    return resp


async def _write(call: Any, request: Any) -> None:
    """Send on the stream. One that etcd has ended is no error here, though gRPC says so (InvalidStateError)
    before the read under way has raised how it ended: that read, or the next, tells the watch. This is what
    etcd stopping does to a second watch woken by the first one's failure (the member is suspected)."""
    with contextlib.suppress(asyncio.InvalidStateError):  # "RPC already finished"
        await call.write(request)
