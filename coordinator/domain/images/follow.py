"""Following an image's download to its end in the background of the replica that started it.

Any replica can carry a download forward (every read of a Downloading image refreshes it too), so the
follower is a convenience, not the owner: expected failures back off, a 404 (the image was deleted)
ends it, and a bug ends it logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from agentkit.errors import HostStackError
from coordinator.domain.images.records import ImageRecord
from coordinator.etcd.store import StoreUnavailable

log = logging.getLogger(__name__)
POLL = 0.5
MAX_POLL = 10.0
Refresh = Callable[[], Awaitable[ImageRecord]]
Done = Callable[[ImageRecord], bool]
_followers: set[asyncio.Task[None]] = set()


async def _follow(uuid: str, refresh: Refresh, done: Done) -> None:
    delay = POLL
    while True:
        try:
            if done(await refresh()):
                return
            delay = POLL
        except (HostStackError, StoreUnavailable) as e:
            if isinstance(e, HostStackError) and e.status == 404:
                return
            log.warning("following image %s: %s", uuid, e)
            delay = min(delay * 2, MAX_POLL)
        await asyncio.sleep(delay)


def _done(task: asyncio.Task[None]) -> None:
    _followers.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("following an image failed; reads of the image carry it forward", exc_info=task.exception())


def follow(uuid: str, refresh: Refresh, done: Done) -> None:
    """Call `refresh` until `done` says the image needs no more following."""
    task = asyncio.create_task(_follow(uuid, refresh, done), name=f"follow-image-{uuid}")
    _followers.add(task)
    task.add_done_callback(_done)
