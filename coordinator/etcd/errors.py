"""What the store driver raises, and how it reads the gRPC errors etcd answers with.

The rest of the coordinator sees two exceptions only: `StoreUnavailable` (retry later; the API answers
503) and `Compacted` (a watch or read asked for history etcd no longer has). Inside the driver, every
gRPC error is sorted into one `Fault` that says whether another attempt may help and whether the member
that answered should be avoided for a while.
"""

from __future__ import annotations

import enum

import grpc

from agentkit.errors import Unavailable


class Compacted(Exception):
    """The requested revision is gone; callers start again from a snapshot."""

    def __init__(self, compact_revision: int):
        super().__init__(f"revision compacted below {compact_revision}")
        self.compact_revision = compact_revision


class StoreUnavailable(Unavailable):
    """etcd could not be reached or did not answer in time: retry later (the API answers 503)."""


class Rewound(StoreUnavailable):
    """etcd's data was restored from a backup under a watch (`why`: how the watch found out). Resumed,
    the watch would wait for revisions it has seen, or hand out the restored data's as if they followed
    what it handed out before; its consumer lists again instead."""

    def __init__(self, prefix: str, why: str):
        super().__init__(f"etcd watch on {prefix}: {why}")


class Fault(enum.Enum):
    MEMBER = "member"  # the member is down, hung, cut off from its leader or mid-election: try another
    BUSY = "busy"  # the cluster asked us to slow down: pause, then try again
    TOKEN = "token"  # the auth token is unknown to this member (expired, or the member restarted)
    COMPACTED = "compacted"
    FINAL = "final"  # another attempt gets the same answer (permission, bad request, no such lease)


_MEMBER_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                 grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED}


def fault(e: grpc.aio.AioRpcError) -> Fault:
    """Sort one error. etcd 3.4 answers "no leader", "leader changed" and "request timed out" with
    UNAVAILABLE, a dropped proposal with UNKNOWN: all of those and every transport failure are MEMBER."""
    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
        return Fault.COMPACTED
    if code == grpc.StatusCode.UNAUTHENTICATED or "auth store is old" in details:
        return Fault.TOKEN
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "too many requests" in details:
        return Fault.BUSY
    if code in _MEMBER_CODES:
        return Fault.MEMBER
    return Fault.FINAL


def describe(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return f"{type(e).__name__}: {e}"
