"""The image store's /health and /v1/capacity (aiohttp's test server, real files): answered from memory and one
statvfs, never a walk of the images directory, and still what the directory holds."""

from __future__ import annotations

import os

from tests.unit.imagestore import test_api
from tests.unit.imagestore.test_api import ADMIN, MiB, forbid_listing, half_uploaded, iso_blob, put, wait

no_crash, source, store = test_api.no_crash, test_api.source, test_api.store  # its fixtures serve here too


async def test_health_answers_from_memory_and_one_statvfs_never_listing_the_directory(
        store, source, tmp_path, monkeypatch):
    """A load balancer or scraper polls /health: on a store of many images a walk per probe is disk I/O per probe.
    What it reports stays what the directory holds: the ready images' allocated bytes, an upload's so far."""
    root, uploaded = tmp_path / "store", iso_blob(seed=9)
    await wait(store, (await put(store, "r1", url=source.url("a.iso")))["id"])
    upload, gate = await half_uploaded(store, "u1", uploaded)
    ready = (root / "images/r1/data").stat().st_blocks * 512
    asked = forbid_listing(monkeypatch)  # nothing else asks the filesystem now: the upload waits for its gate
    r = await store.get("/health", headers=ADMIN)
    assert r.status == 200, await r.text()
    health = await r.json()
    assert asked == [str(root)]  # one statvfs, no listing
    capacity, fs = health["capacity"], os.statvfs(root)
    assert (capacity["images"], capacity["downloading"], capacity["total"]) == (1, 1, fs.f_blocks * fs.f_frsize)
    assert capacity["used"] == ready + MiB
    gate.set()
    assert (await upload).status == 201
    capacity = await (await store.get("/v1/capacity", headers=ADMIN)).json()
    both = ready + (root / "images/u1/data").stat().st_blocks * 512
    assert (capacity["images"], capacity["downloading"], capacity["used"]) == (2, 0, both)
    await store.delete("/v1/images/u1", headers=ADMIN)
    capacity = await (await store.get("/v1/capacity", headers=ADMIN)).json()
    assert (capacity["images"], capacity["downloading"], capacity["used"]) == (1, 0, ready)
