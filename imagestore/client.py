"""Client of the image store's API, for the coordinator and tests (no I/O beyond HTTP).

Every call returns an `imagestore.wire` model or raises an `ImageStoreError`: `RemoteError` with the
store's code, status, message and field, or `StoreUnreachable` when it does not answer (or answers
something of the wrong shape).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pydantic import TypeAdapter

from agentkit import errors as base
from agentkit.agentclient import AgentClient
from imagestore.errors import ImageStoreError
from imagestore.wire import AddRequest, Capacity, Health, ImageInfo

_LIST = TypeAdapter(list[ImageInfo])


class RemoteError(ImageStoreError, base.RemoteError):
    """An error the image store answered, or the error a failed download ended with."""


class StoreUnreachable(ImageStoreError):
    code, status = "store_unreachable", 502
    msg_fmt = "image store at {url} did not answer: {reason}"


class ImageStoreClient(AgentClient):
    remote = RemoteError
    unreachable = StoreUnreachable

    async def health(self) -> Health:
        return await self._get("/health", Health)

    async def capacity(self) -> Capacity:
        return await self._get("/v1/capacity", Capacity)

    async def images(self) -> list[ImageInfo]:
        return await self._call_as("GET", "/v1/images", _LIST.validate_python)

    async def image(self, image_id: str) -> ImageInfo:
        return await self._get(f"/v1/images/{image_id}", ImageInfo)

    async def add(self, image_id: str, request: AddRequest) -> ImageInfo:
        """Start (or find) the download of `request` as `image_id`."""
        return await self._call_as("PUT", f"/v1/images/{image_id}", ImageInfo.model_validate, request)

    async def delete(self, image_id: str) -> None:
        await self._call("DELETE", f"/v1/images/{image_id}")

    async def wait(self, image_id: str, on_progress: Callable[[ImageInfo], None] | None = None,
                   interval: float = 0.5, timeout: float | None = None) -> ImageInfo:
        """Poll until the image is ready; RemoteError with the download's error code when it failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = await self.image(image_id)
            if on_progress is not None:
                on_progress(info)
            if info.state == "ready":
                return info
            if info.state == "failed":
                err = info.error
                raise RemoteError(422, err.code if err else "failed", err.message if err else "download failed")
            if deadline is not None and time.monotonic() > deadline:
                reason = f"image {image_id} still {info.state} after {timeout}s"
                raise StoreUnreachable(url=self.base_url, reason=reason)
            await asyncio.sleep(interval)
