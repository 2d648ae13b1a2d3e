"""ImageStore backup storage: a directory on an image store host, managed by the imagestore agent there.

Adding one asks the host's agent (it must answer, and manage the directory given: its `root`) and
records the storage (`/hs/imagestore/<uuid>`, its name held unique by `/hs/imagestore-name/<name>`).
One host holds one image store. Shown storages come with what their agents answer now (version,
capacity). A storage that still holds images cannot be deleted.
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from typing import Literal

from pydantic import BaseModel

from agentkit.errors import HostStackError, InUse, Invalid, NotFound
from coordinator.domain import hosts
from coordinator.domain.errors import Exists, MissingReference
from coordinator.domain.hosts import Host
from coordinator.domain.images.records import held_by
from coordinator.domain.imagestore.agents import Stores, store_error
from coordinator.etcd import keys
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Entry, Store, Txn
from coordinator.settings import CoordinatorSettings
from imagestore.errors import ImageStoreError
from imagestore.wire import Capacity, Health


class ImageStoreRecord(BaseModel):
    uuid: str
    name: str
    host_uuid: str
    path: str
    zone: str = "default"
    created_at: float


class ImageStoreView(BaseModel):
    uuid: str
    name: str
    type: Literal["ImageStore"] = "ImageStore"
    host_uuid: str
    host_name: str
    address: str
    path: str
    zone: str
    status: Literal["Connected", "Disconnected", "Unknown"]
    reason: str | None = None
    version: str | None = None
    capacity: Capacity | None = None
    created_at: float


def describe(rec: ImageStoreRecord, host: Host, answer: Health | HostStackError | None) -> ImageStoreView:
    """The view; `answer` is what the agent said now (None: not asked)."""
    view = ImageStoreView(uuid=rec.uuid, name=rec.name, host_uuid=host.uuid, host_name=host.name,
                          address=host.address, path=rec.path, zone=rec.zone, status="Unknown",
                          created_at=rec.created_at)
    if isinstance(answer, Health):
        view.status, view.version, view.capacity = "Connected", answer.version, answer.capacity
    elif answer is not None:
        view.status, view.reason = "Disconnected", answer.message
    return view


async def load_store(store: Store, ref: str, field: str | None = None) -> tuple[ImageStoreRecord, Entry]:
    """An image store by uuid or name; 404, or 400 naming `field` for a reference in a request body."""
    entry = await store.get(keys.image_store(ref))
    if entry is None:
        named = await store.get(keys.image_store_name(ref))
        if named is not None and isinstance(named.value, str):
            entry = await store.get(keys.image_store(named.value))
    if entry is None:
        what = "image store"
        raise MissingReference(what=what, ident=ref, field=field) if field else NotFound(what=what, ident=ref)
    return ImageStoreRecord.model_validate(entry.value), entry


async def load_stores(store: Store) -> list[ImageStoreRecord]:
    entries, _ = await store.list(keys.IMAGE_STORES)
    return [ImageStoreRecord.model_validate(e.value) for e in entries]


async def health(settings: CoordinatorSettings, host: Host, timeout: float = 10) -> Health | HostStackError:
    """The agent's answer, or the error saying why there is none."""
    try:
        async with Stores(settings, timeout) as stores:
            return await stores.client(host).health()
    except ImageStoreError as e:
        return store_error(host, e)
    except HostStackError as e:
        return e


async def add(store: Store, settings: CoordinatorSettings, name: str, host_ref: str, path: str | None,
              zone: str) -> ImageStoreView:
    host = await hosts.find(store, host_ref)
    if host.kind != "imagestore":
        raise Invalid(f"host {host.name} is a {host.kind} host; an image store needs a host of kind imagestore",
                      field="host")
    await _free(store, host)
    answer = await health(settings, host)
    if isinstance(answer, HostStackError):
        raise answer
    if path is not None and path.rstrip("/") != answer.root:
        raise Invalid(f"the image store agent on {host.name} keeps its images in {answer.root}, not {path} "
                      "(its `root` setting)", field="path")
    rec = ImageStoreRecord(uuid=uuidlib.uuid4().hex, name=name, host_uuid=host.uuid, path=answer.root, zone=zone,
                           created_at=time.time())
    name_key, key = keys.image_store_name(name), keys.image_store(rec.uuid)

    async def attempt(_: int) -> bool | None:
        txn = Txn().exists(keys.host(host.uuid)).none_created_since(keys.IMAGE_STORES, await _free(store, host))
        if await store.commit(txn.absent(name_key).absent(key).put(name_key, rec.uuid).put(key, rec.model_dump())) \
                is not None:
            return True
        if await store.get(name_key) is not None:
            raise Exists(f"an image store named {name} already exists", field="name")
        if not await hosts.exists(store, host.uuid):
            raise NotFound(what="host", ident=host_ref)
        return None
    await retry_cas(attempt, f"image store {name}")
    return describe(rec, host, answer)


async def _free(store: Store, host: Host) -> int:
    """Exists if `host` holds an image store; else the revision that was read at, to guard the add on (another
    added meanwhile, on any replica, fails it: it reads again). Its delete meanwhile fails it too."""
    entries, read_at = await store.list(keys.IMAGE_STORES)
    if any(ImageStoreRecord.model_validate(e.value).host_uuid == host.uuid for e in entries):
        raise Exists(f"host {host.name} already holds an image store", field="host")
    return read_at


async def show(store: Store, settings: CoordinatorSettings, ref: str, live: bool = True) -> ImageStoreView:
    rec, _ = await load_store(store, ref)
    host = await hosts.load(store, rec.host_uuid)
    return describe(rec, host, await health(settings, host) if live else None)


async def list_all(store: Store, settings: CoordinatorSettings, live: bool = True) -> list[ImageStoreView]:
    recs = await load_stores(store)
    found = await asyncio.gather(*(hosts.load(store, r.host_uuid) for r in recs))
    answers = await asyncio.gather(*(health(settings, h) for h in found)) if live else [None] * len(recs)
    return [describe(r, h, a) for r, h, a in zip(recs, found, answers, strict=True)]


async def delete(store: Store, ref: str) -> None:
    """Forget an image store (its directory stays on the host); refused while it holds images, one added since
    they were read (on any replica) included."""
    async def attempt(_: int) -> bool | None:
        rec, entry = await load_store(store, ref)
        names, read_at = await held_by(store, rec.uuid)
        if names:
            raise InUse(f"image store {rec.name} still holds {len(names)} images: {', '.join(names[:10])}; "
                        "delete them first")
        txn = Txn().unchanged(entry.key, entry.mod_revision).none_created_since(keys.IMAGES, read_at).delete(entry.key)
        txn.delete(keys.image_store_name(rec.name))
        return True if await store.commit(txn) is not None else None

    await retry_cas(attempt, "image store")
