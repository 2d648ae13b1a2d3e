"""Client of the cephagent HTTP API, for the coordinator (needs neither rados nor rbd).

Every call returns a `cephagent.wire` model or raises a `CephAgentError`: `RemoteError` carrying the
agent's code, status, message and field, or `AgentUnreachable` when the agent does not answer (or answers
something of the wrong shape).
`probe` applies the one-cluster rule to the agents of all mons of a storage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from agentkit.agentclient import AgentClient
from cephagent.errors import CephAgentError, RemoteError
from cephagent.fsid import check_same_fsid
from cephagent.monurl import FIELD
from cephagent.wire import (
    CephSecret,
    ClusterInfo,
    ImageInfo,
    ParentSpec,
    PoolResult,
    SnapshotInfo,
    TaskInfo,
    TaskRef,
    VolumeInfo,
)

PORT = 8742


class AgentUnreachable(CephAgentError):
    code, status = "agent_unreachable", 502
    msg_fmt = "cephagent at {url} did not answer: {reason}"


class CephAgentClient(AgentClient):
    """One agent (`base_url` like `http://10.0.0.5:8742`); pass a shared `session` or close() this client."""

    remote = RemoteError
    unreachable = AgentUnreachable

    async def health(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("GET", "/health")
        return data

    async def cluster(self) -> ClusterInfo:
        return await self._get("/v1/cluster", ClusterInfo)

    async def ensure_pool(self, name: str, must_exist: bool = False) -> PoolResult:
        """The seeds' pool rule: use it if present; if named (`must_exist`) but absent fail; else create."""
        body = {"name": name, "must_exist": must_exist}
        return await self._call_as("POST", "/v1/pools/check-or-create", PoolResult.model_validate, body)

    async def secret(self, pools: Sequence[str], read_only_pools: Sequence[str] = ()) -> CephSecret:
        """The VM user's key, its caps extended to `pools` (read-write) and `read_only_pools`."""
        query = urlencode([*(("pool", p) for p in pools), *(("read_only_pool", p) for p in read_only_pools)])
        return await self._get(f"/v1/secret?{query}", CephSecret)

    async def import_image(self, pool: str, name: str, url: str, format: str = "auto") -> str:
        """Start an import; returns the task id to poll with `task` or `wait`."""
        body = {"pool": pool, "name": name, "url": url, "format": format}
        return (await self._call_as("POST", "/v1/images", TaskRef.model_validate, body)).task_id

    async def task(self, task_id: str) -> TaskInfo:
        return await self._get(f"/v1/tasks/{task_id}", TaskInfo)

    async def wait(self, task_id: str, on_progress: Callable[[TaskInfo], None] | None = None,
                   interval: float = 0.5, timeout: float | None = None) -> ImageInfo:
        """Poll a task to its end; the result, or a RemoteError with the task's error code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = await self.task(task_id)
            if on_progress:
                on_progress(info)
            if info.state == "succeeded" and info.result is not None:
                return info.result
            if info.state == "failed":
                err = info.error
                raise RemoteError(422, err.code if err else "failed", err.message if err else "task failed")
            if deadline is not None and time.monotonic() > deadline:
                raise AgentUnreachable(url=self.base_url, reason=f"task {task_id} still {info.state} after {timeout}s")
            await asyncio.sleep(interval)

    async def image(self, pool: str, name: str) -> ImageInfo:
        return await self._get(f"/v1/images/{pool}/{name}", ImageInfo)

    async def delete_image(self, pool: str, name: str) -> None:
        await self._call("DELETE", f"/v1/images/{pool}/{name}")

    async def clone(self, pool: str, name: str, source: ParentSpec, size: int | None = None) -> VolumeInfo:
        body = {"pool": pool, "name": name, "source": source.model_dump(), "size": size}
        return await self._call_as("POST", "/v1/volumes/clone", VolumeInfo.model_validate, body)

    async def create_volume(self, pool: str, name: str, size: int) -> VolumeInfo:
        body = {"pool": pool, "name": name, "size": size}
        return await self._call_as("POST", "/v1/volumes", VolumeInfo.model_validate, body)

    async def volume(self, pool: str, name: str) -> VolumeInfo:
        return await self._get(f"/v1/volumes/{pool}/{name}", VolumeInfo)

    async def resize(self, pool: str, name: str, size: int, allow_shrink: bool = False) -> VolumeInfo:
        body = {"size": size, "allow_shrink": allow_shrink}
        return await self._call_as("POST", f"/v1/volumes/{pool}/{name}/resize", VolumeInfo.model_validate, body)

    async def flatten(self, pool: str, name: str, timeout: float = 3600) -> VolumeInfo:
        """Copies the parent's data: allow time proportional to the image's allocated size."""
        return await self._call_as("POST", f"/v1/volumes/{pool}/{name}/flatten", VolumeInfo.model_validate,
                                   timeout=timeout)

    async def create_snapshot(self, pool: str, name: str, snap: str, protect: bool = False) -> SnapshotInfo:
        body = {"name": snap, "protect": protect}
        return await self._call_as("POST", f"/v1/volumes/{pool}/{name}/snapshots", SnapshotInfo.model_validate, body)

    async def delete_snapshot(self, pool: str, name: str, snap: str) -> None:
        await self._call("DELETE", f"/v1/volumes/{pool}/{name}/snapshots/{snap}")

    async def rollback(self, pool: str, name: str, snap: str) -> VolumeInfo:
        return await self._call_as("POST", f"/v1/volumes/{pool}/{name}/snapshots/{snap}/rollback",
                                   VolumeInfo.model_validate)

    async def delete_volume(self, pool: str, name: str) -> None:
        await self._call("DELETE", f"/v1/volumes/{pool}/{name}")


async def probe(agents: Mapping[str, CephAgentClient], expected_fsid: str | None = None
                ) -> tuple[str, dict[str, ClusterInfo]]:
    """Ask every mon's agent for its cluster (concurrently) and check they are one cluster.

    `agents` maps how a mon is shown to users (its redacted monUrl) to its client. Returns the fsid and
    each mon's ClusterInfo; raises RemoteError naming the first mon whose agent failed or did not answer
    (code `agent_unreachable`, `cluster_unavailable`...), or FsidMismatch naming the odd ones out.
    """
    answers = await asyncio.gather(*(a.cluster() for a in agents.values()), return_exceptions=True)
    infos: dict[str, ClusterInfo] = {}
    for mon, answer in zip(agents, answers, strict=True):
        if isinstance(answer, CephAgentError):
            raise RemoteError(answer.status, answer.code, f"mon {mon}: {answer.message}", FIELD) from answer
        if isinstance(answer, BaseException):
            raise answer
        infos[mon] = answer
    fsid = check_same_fsid({mon: info.fsid for mon, info in infos.items()}, expected_fsid)
    return fsid, infos
