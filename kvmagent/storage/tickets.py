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

    async def _ask(self, session: aiohttp.ClientSession, path: str, what: str) -> dict[str, Any]:
        """POST `path` with the host's current token; the ticket's answer, or ImageFetchError naming `what`."""
        headers = {"Authorization": f"Bearer {self.host_token()}"}
        try:
            async with session.post(f"{self.base}{path}", headers=headers, timeout=self.timeout) as r:
                answer = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise ImageFetchError(f"{what}: no ticket from the coordinator: {e}") from e
        if r.status >= 300 or not isinstance(answer, dict):
            err = answer.get("error", {}) if isinstance(answer, dict) else {}
            raise ImageFetchError(f"{what}: no ticket: HTTP {r.status} {err.get('code', '')} "
                                  f"{err.get('message', '')}".rstrip())
        return answer

    async def locate(self, session: aiohttp.ClientSession, image: ImageRef) -> Source:
        answer = await self._ask(session, f"/v1/images/{image.uuid}/tickets", f"image {image.uuid}")
        if (answer.get("sha256"), answer.get("size")) != (image.sha256, image.size):
            raise ImageFetchError(f"image {image.uuid}: the coordinator now describes it as {answer.get('size')} bytes "
                                  f"with sha256 {answer.get('sha256')}, not {image.size} with {image.sha256}")
        return Source(str(answer["url"]), {"Authorization": f"Bearer {answer['ticket']}"})

    async def upload_target(self, session: aiohttp.ClientSession, image_uuid: str) -> Source:
        """Where to send an image made of a volume: the store's URL, an upload ticket, what the image is."""
        answer = await self._ask(session, f"/v1/images/{image_uuid}/upload-tickets", f"image {image_uuid} upload")
        return Source(str(answer["url"]), {"Authorization": f"Bearer {answer['ticket']}",
                                           "X-Image-Format": str(answer["format"]),
                                           "X-Image-Media-Type": str(answer["media_type"])})

    async def volume(self, session: aiohttp.ClientSession, volume_uuid: str) -> tuple[Source, str]:
        """Where this host (a migration's target) reads the volume's files on the source host, and the
        migration the ticket is for."""
        answer = await self._ask(session, f"/v1/volumes/{volume_uuid}/migration/tickets", f"volume {volume_uuid}")
        return Source(str(answer["url"]), {"Authorization": f"Bearer {answer['ticket']}"}), str(answer["migration_id"])
