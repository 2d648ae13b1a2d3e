"""The deploy log: an entry before and after every task, POSTed to the coordinator as it happens.

`POST <api>/v1/hosts/{uuid}/deploy-log` with `{host, task, phase, ok, duration_ms, message}` and the
admin token. Posting runs on a background thread, in order, so a slow or absent coordinator never
slows or fails a deploy: a post that fails is logged once and dropped.
"""

from __future__ import annotations

import logging
import queue
import threading

from deployer.coordinator_api import Api, Body
from deployer.errors import CoordinatorError

log = logging.getLogger(__name__)


class DeployLog:
    def __init__(self, api_url: str, admin_token: str | None, timeout: float = 3.0):
        self.api = Api(api_url, admin_token, timeout)
        self.failed = False
        self._queue: queue.Queue[tuple[str, Body] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name="deploy-log", daemon=True)
        self._thread.start()

    def post(self, host_uuid: str, entry: Body) -> None:
        self._queue.put((host_uuid, entry))

    def _send(self, host_uuid: str, entry: Body) -> None:
        path = f"/v1/hosts/{host_uuid}/deploy-log"
        try:
            self.api.call("POST", path, entry)
        except CoordinatorError as e:
            if not self.failed:
                log.warning("deploy log: POST %s failed (%s); further failures are not logged", path, e)
            self.failed = True

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            self._send(*item)

    def close(self, timeout: float = 10) -> None:
        """Send what is queued (bounded by `timeout`) and stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)
