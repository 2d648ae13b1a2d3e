"""Where a host reads an image: a read ticket from the coordinator for the image store (docs/storage.md);
and where it sends an image made of a volume: an upload ticket.

The host asks with its own current token (`POST /v1/images/{uuid}/tickets`; the link renews it) and gets
the store's data URL and a ticket good for that one image for a while; the ticket goes with every GET as
a bearer credential. The answer's checksum and size must be the ones the desired state promised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from agentkit.model import ImageRef
from kvmagent.errors import ImageFetchError


@dataclass(frozen=True)
class Source:
    url: str
    headers: dict[str, str]


class Tickets:
    def __init__(self, coordinator_url: str, host_token: Callable[[], str], timeout: float = 30):
        self.base = coordinator_url.rstrip("/")
        self.host_token = host_token
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def locate(self, session: aiohttp.ClientSession, image: ImageRef) -> Source:
        answer = await self._ask(session, image.uuid, "tickets", "read ticket")
        if (answer.get("sha256"), answer.get("size")) != (image.sha256, image.size):
            raise ImageFetchError(f"image {image.uuid}: the coordinator now describes it as {answer.get('size')} bytes "
                                  f"with sha256 {answer.get('sha256')}, not {image.size} with {image.sha256}")
        return Source(str(answer["url"]), {"Authorization": f"Bearer {answer['ticket']}"})

    async def upload_target(self, session: aiohttp.ClientSession, image_uuid: str) -> Source:
        """Where to send an image made of a volume: the store's URL, an upload ticket, what the image is."""
        answer = await self._ask(session, image_uuid, "upload-tickets", "upload ticket")
        return Source(str(answer["url"]), {"Authorization": f"Bearer {answer['ticket']}",
                                           "X-Image-Format": str(answer["format"]),
                                           "X-Image-Media-Type": str(answer["media_type"])})

    async def _ask(self, session: aiohttp.ClientSession, image_uuid: str, route: str, what: str) -> dict[str, Any]:
        url = f"{self.base}/v1/images/{image_uuid}/{route}"
        headers = {"Authorization": f"Bearer {self.host_token()}"}
        try:
            async with session.post(url, headers=headers, timeout=self.timeout) as r:
                answer = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise ImageFetchError(f"image {image_uuid}: no {what} from the coordinator: {e}") from e
        if r.status >= 300 or not isinstance(answer, dict):
            err = answer.get("error", {}) if isinstance(answer, dict) else {}
            raise ImageFetchError(f"image {image_uuid}: no {what}: HTTP {r.status} {err.get('code', '')} "
                                  f"{err.get('message', '')}".rstrip())
        return answer
