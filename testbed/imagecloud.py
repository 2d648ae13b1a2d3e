"""Images and file-based primary storage set up through the coordinator, as an operator would: an image store
on a host of its own (kind imagestore, its agent on loopback where the coordinator reaches it), images added
from URLs, and a LocalStorage whose hosts have reported their capacity. What the system test, the demo and
the image-clone benchmark share."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from coordinator.client import Client
from testbed.imagestore import ImageStoreProcess
from testbed.kvmhost import KvmHost
from testbed.netns import Run
from testbed.pki import TestPki


async def image_store(api: Client, run: Run, name: str, port: int,
                      file_roots: list[Path] | None = None, pki: TestPki | None = None) -> ImageStoreProcess:
    """Register the store's host, start its agent with the host's token (over TLS with the run's `pki`, as a
    TLS coordinator calls it), add the ImageStore `name`."""
    host = await api.post("/v1/hosts", {"name": f"{name}-host", "address": "127.0.0.1", "kind": "imagestore"})
    store = ImageStoreProcess(run, run.path(f"{name}-root"), "127.0.0.1", port, file_roots=file_roots,
                              token=host["token"], pki=pki)
    await asyncio.to_thread(store.start)
    await api.post("/v1/image-stores", {"name": name, "host": host["uuid"]})
    return store


async def add_image(api: Client, store: str, name: str, url: str, timeout: float = 300,
                    **fields: Any) -> dict[str, Any]:
    """Add an image from `url` to the image store `store`; the image once it is no longer Downloading."""
    image = await api.post("/v1/images", {"name": name, "backup_storage_uuid": store, "url": url, **fields})
    deadline = time.monotonic() + timeout
    while image["status"] == "Downloading":
        if time.monotonic() > deadline:
            raise TimeoutError(f"image {name} still downloading: {image}")
        await asyncio.sleep(0.2)
        image = await api.get(f"/v1/images/{image['uuid']}")
    return image


async def local_storage(api: Client, name: str, url: Path, host: KvmHost, timeout: float = 30) -> dict[str, Any]:
    """The LocalStorage `name` at `url`, once `host` reported its capacity (placement needs the figures)."""
    await api.post("/v1/primary-storage", {"name": name, "type": "LocalStorage", "url": str(url)})
    deadline = time.monotonic() + timeout
    while not ((ps := await api.get(f"/v1/primary-storage/{name}"))["hosts"].get(host.uuid) or {}).get("capacity"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"host {host.name} never reported storage {name}: {ps}")
        await asyncio.sleep(0.2)
    return ps
