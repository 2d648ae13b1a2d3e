"""The storage component: this host's file-based primary storages, their image caches and volumes.

A pass (`apply`, in the agent's pipeline, before the VMs) checks every attached storage (a LocalStorage
directory made if missing; a SharedMountPoint mounted, marked, heartbeat written), brings every volume
of the host's desired state to its spec, fetches the ISO images its VMs' cdroms need, and reports.
Between passes a checker task re-checks mounts, writes heartbeats, measures capacity and collects
unused cached images. The VMs ask the component where their volumes and ISOs are (`Storages`); when
that changes (a volume made or moved to a new file, a storage lost or mounted again) the VMs that use
them are told, so one waiting for its volume starts as soon as the volume is ready.

Reports: `storage` `<storage>.<host>` (state, error, capacity, cache, peers) and `volume` `<uuid>`
(state, error, files, snapshots, exports), each sent when it changes (capacity alone at most once a
minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from typing import Any

import aiohttp

from agentkit.model import ImageRef, IsoSpec, PrimaryStorageSpec, StoredVolumeSpec
from agentkit.proc import ProcessError
from agentkit.supervise import Supervisor
from kvmagent.errors import StorageError, StorageUnavailable, VolumeNotReady
from kvmagent.storage import capacity, mounts
from kvmagent.storage.exports import Exports, UploadTarget
from kvmagent.storage.fetch import Locate, fetch
from kvmagent.storage.holders import Holders
from kvmagent.storage.imagecache import ImageCache
from kvmagent.storage.layout import Layout
from kvmagent.storage.pull import Puller, VolumeTicket
from kvmagent.storage.record import VolumeRecord, load
from kvmagent.storage.reports import Reports, storage_body, volume_body
from kvmagent.storage.settings import StorageSettings
from kvmagent.storage.tickets import Source
from kvmagent.storage.volumes import VolumeWorker, Waiting
from kvmagent.view import HostView

log = logging.getLogger(__name__)
Listener = Callable[[set[str]], None]


@dataclass
class Store:
    """One attached storage as this host sees it."""

    spec: PrimaryStorageSpec
    layout: Layout
    cache: ImageCache
    worker: VolumeWorker
    exports: Exports
    error: str | None = None  # why it is not usable here
    peers: list[str] = field(default_factory=list)
    capacity: dict[str, int] | None = None  # as last measured

    def report(self) -> dict[str, Any]:
        return storage_body(self.spec, self.error, self.peers, self.capacity if self.error is None else None,
                            dict(self.cache.progress))


async def _no_tickets(_: aiohttp.ClientSession, volume_uuid: str) -> tuple[Source, str]:
    raise StorageError(f"volume {volume_uuid}: this agent was given no way to ask for volume tickets")


class StorageComponent:
    name = "storage"
    after: tuple[str, ...] = ()

    def __init__(self, settings: StorageSettings, host_uuid: str, host_name: str, holders: Holders,
                 report: Callable[[str, str, dict[str, Any]], object], locate: Locate,
                 tasks: Supervisor | None = None, mountinfo: Callable[[], str] = mounts.read_mountinfo,
                 upload_to: UploadTarget | None = None, volume_ticket: VolumeTicket | None = None,
                 ssl: SSLContext | None = None):
        self.settings = settings
        self._ssl = ssl  # verifies the coordinator and the image stores (None: plain_http, or the system's CAs)
        self._locate = locate
        self._upload_to = upload_to  # where images made of volumes go (none: they are made, not sent)
        self.host_uuid, self.host_name = host_uuid, host_name
        self.holders = holders
        self.reports = Reports(report)
        self._tasks = tasks or Supervisor()
        self._mountinfo = mountinfo
        self.stores: dict[str, Store] = {}
        self.paths: dict[str, Path] = {}  # volume uuid -> the file a VM opens (made volumes)
        self.waiting: dict[str, str] = {}  # volume or ISO image uuid -> why it is not ready
        self.isos: dict[tuple[str, str], Path] = {}  # (storage, image) -> cached ISO
        self.listeners: list[Listener] = []
        self.wake: Callable[[], None] = lambda: None  # asks the pipeline for a pass (set by the composition root)
        self._locks: dict[str, asyncio.Lock] = {}
        self._pass = asyncio.Lock()  # a pass and a cache collection do not overlap
        self._session: aiohttp.ClientSession | None = None
        self._next_gc = 0.0
        self.puller = Puller(volume_ticket or _no_tickets, self._tasks,
                             lambda uuid, body: self.reports.send("migration", uuid, body), lambda: self.wake(),
                             settings.fetch_stall, settings.fetch_retries, settings.migrate_retry, ssl=ssl)

    # -- what the VMs ask (kvmagent.vms.paths.Storages) -------------------------------------------------
    def root(self, storage_uuid: str) -> Path:
        return self._usable(storage_uuid).layout.root

    def volume_path(self, volume_uuid: str, storage_uuid: str) -> Path:
        self._usable(storage_uuid)
        path = self.paths.get(volume_uuid)
        if path is None:
            why = self.waiting.get(volume_uuid, "not made on this host yet")
            raise VolumeNotReady(f"volume {volume_uuid} is not ready: {why}")
        return path

    def iso_path(self, iso: IsoSpec) -> Path:
        if iso.image is None or iso.storage_uuid is None:
            raise ValueError(f"ISO {iso.uuid} is a path, not an image")
        self._usable(iso.storage_uuid)
        path = self.isos.get((iso.storage_uuid, iso.image.uuid))
        if path is None:
            why = self.waiting.get(iso.image.uuid, "not fetched yet")
            raise VolumeNotReady(f"ISO image {iso.image.uuid} is not in the cache of storage {iso.storage_uuid}: "
                                 f"{why}")
        return path

    @contextlib.asynccontextmanager
    async def holding(self, volume_uuids: Iterable[str]) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for uuid in sorted(set(volume_uuids)):
                await stack.enter_async_context(self._lock(uuid))
            yield

    def layouts(self) -> list[Layout]:
        """The storages usable here (where a migration's source looks for a volume to serve)."""
        return [s.layout for s in self.stores.values() if s.error is None]

    def _usable(self, storage_uuid: str) -> Store:
        store = self.stores.get(storage_uuid)
        if store is None:
            raise StorageError(f"primary storage {storage_uuid} is not attached to host {self.host_name}")
        if store.error:
            raise StorageUnavailable(store.error)
        return store

    def _lock(self, uuid: str) -> asyncio.Lock:
        return self._locks.setdefault(uuid, asyncio.Lock())

    # -- the pipeline --------------------------------------------------------------------------------
    def start(self) -> None:
        """The checker: mounts, heartbeats, capacity and cache collection between passes."""
        self._tasks.start(self._checker(), name="storage checker")

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        async with self._pass:
            changed = self._attach(view.storages, view.held_of("storage"))
            errors = []
            for spec in sorted(view.volumes.values(), key=lambda v: v.uuid):
                error = await self._volume(spec, changed)
                if error:
                    errors.append(error)
            errors += self._isos(view, changed)
            self._forget(view)
            for store in list(self.stores.values()):
                if store.error is None and store.capacity is None:  # its first report says how large it is
                    store.capacity = (await asyncio.to_thread(capacity.measure, store.layout)).report()
                self.reports.send("storage", f"{store.spec.uuid}.{self.host_uuid}", store.report())
        self._notify(changed)
        if errors:
            raise StorageError(f"{len(errors)} storage item(s) not converged: " + "; ".join(errors[:3]))

    async def close(self) -> None:
        await self._tasks.stop()
        await self.puller.close()
        if self._session is not None:
            await self._session.close()

    # -- storages --------------------------------------------------------------------------------------
    def _attach(self, specs: dict[str, PrimaryStorageSpec], held: set[str]) -> set[str]:
        """Follow the attached storages (a held one stays as it is) and check each; the uuids whose usability
        changed."""
        changed = set()
        for uuid in set(self.stores) - set(specs) - held:
            del self.stores[uuid]
            changed.add(uuid)
        for uuid, spec in specs.items():
            store = self.stores.get(uuid)
            if store is None or store.spec != spec:
                store = self.stores[uuid] = self._store(spec)
                changed.add(uuid)
            if self._check(store):
                changed.add(uuid)
        return changed

    def _store(self, spec: PrimaryStorageSpec) -> Store:
        layout = Layout(Path(os.path.realpath(spec.url)))
        cache = ImageCache(layout, self.host_uuid, self._fetch, self._tasks, self.wake)
        return Store(spec, layout, cache, VolumeWorker(layout, cache, self.holders), Exports(layout, self.holders))

    def _check(self, store: Store) -> bool:
        """Is the storage usable here? Records why not; True when that changed."""
        before = store.error
        try:
            if store.spec.type == "SharedMountPoint":
                mounts.check_shared(store.spec, self.host_name, self._mountinfo())
                mounts.beat(store.spec, self.host_uuid, self.host_name)
                store.peers = mounts.peers(store.spec, 3 * self.settings.check_interval)
            else:
                mounts.ensure_local(store.spec, self.host_name)
            store.error = None
        except StorageUnavailable as e:
            store.error = str(e)
        if store.error != before:
            (log.error if store.error else log.info)("storage %s: %s", store.spec.uuid, store.error or "usable")
        return store.error != before

    async def _checker(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_interval)
            changed = {uuid for uuid, store in list(self.stores.items()) if self._check(store)}
            for store in list(self.stores.values()):
                if store.error is None:
                    store.capacity = (await asyncio.to_thread(capacity.measure, store.layout)).report()
                self.reports.send("storage", f"{store.spec.uuid}.{self.host_uuid}", store.report())
            if changed:
                self._notify(changed)
                self.wake()
            if time.monotonic() >= self._next_gc:
                self._next_gc = time.monotonic() + self.settings.gc_interval
                await self.collect()

    async def collect(self) -> list[str]:
        """Remove cached images unused for `cache_grace` from every usable storage."""
        removed = []
        async with self._pass:
            for store in list(self.stores.values()):
                if store.error is None:
                    try:
                        removed += await asyncio.to_thread(store.cache.collect, self.settings.cache_grace)
                    except StorageError as e:
                        log.error("storage %s: %s", store.spec.uuid, e)
        return removed

    # -- volumes and ISOs -----------------------------------------------------------------------------
    async def _volume(self, spec: StoredVolumeSpec, changed: set[str]) -> str | None:
        """Converge one volume; its error (None when done or waiting)."""
        if spec.migrate_from is not None and not spec.deleted:
            return self._incoming(spec)
        store = self.stores.get(spec.storage_uuid)
        error = None
        result: VolumeRecord | Waiting | None = None
        exports: dict[str, Any] = {}
        try:
            store = self._usable(spec.storage_uuid)
            async with self._lock(spec.uuid):
                result = await store.worker.converge(spec)
                if isinstance(result, VolumeRecord):
                    exports = await self._exports(store, spec, result)
        except (StorageError, ProcessError) as e:
            error = f"volume {spec.uuid}: {e}"
            if store is not None and store.error is None:
                with contextlib.suppress(StorageError):  # an unreadable record: `error` says so, the VM waits
                    result = load(store.layout.record(spec.uuid))  # what the files are now
        path = store.layout.volume_file(spec.uuid, result.active) if store and isinstance(result, VolumeRecord) \
            else None
        if self.paths.get(spec.uuid) != path:
            changed.add(spec.uuid)
        if path is None:
            self.paths.pop(spec.uuid, None)
        else:
            self.paths[spec.uuid] = path
        self.waiting.pop(spec.uuid, None)
        if isinstance(result, Waiting):
            self.waiting[spec.uuid] = f"fetching image {result.image_uuid} ({result.done} bytes so far)"
        elif error:
            self.waiting[spec.uuid] = error
        used = capacity.allocated(store.layout.volume_dir(spec.uuid)) if store and path else 0
        self.reports.send("volume", spec.uuid, volume_body(spec, result, path, used, exports, error))
        return error

    def _incoming(self, spec: StoredVolumeSpec) -> str | None:
        """A volume migrating here: its image cached first (only the volume's own files are copied), then
        pulled from its source (`pull.py`); reported as `migration`. A failed copy retries by itself."""
        assert spec.migrate_from is not None
        error = None
        try:
            store = self._usable(spec.storage_uuid)
            if spec.image is not None and store.cache.want(spec.image) is None:
                body = {"id": spec.migrate_from.id, "state": "Waiting", "done": 0, "total": 0, "files": {},
                        "error": None}
            else:
                body = self.puller.want(spec, store.layout)
        except StorageError as e:
            error = f"volume {spec.uuid}: {e}"
            body = {"id": spec.migrate_from.id, "state": "Error", "done": 0, "total": 0, "files": {},
                    "error": error[:1024]}
        self.reports.send("migration", spec.uuid, body)
        return error

    async def _exports(self, store: Store, spec: StoredVolumeSpec, record: VolumeRecord) -> dict[str, Any]:
        made = {}
        for export in spec.exports:
            meta = await store.exports.make(spec, record, export)
            if self._upload_to is not None and not meta.get("uploaded"):
                meta = await store.exports.upload(self._http(), meta, self._upload_to)
            made[export.image_uuid] = meta
        store.exports.prune(spec.uuid, set(made))
        return made

    def _forget(self, view: HostView) -> None:
        """What is kept per volume, ISO image or storage this host no longer has (deleted, moved away) goes
        with it: volumes come and go by the thousand while the agent runs for months."""
        kept = set(view.volumes) | {uuid for _, uuid in _wanted_isos(view)}
        for per_item in (self.waiting, self.puller.copies):
            for uuid in set(per_item) - kept:
                del per_item[uuid]
        for uuid in [u for u, lock in self._locks.items() if u not in kept and not lock.locked()]:  # held: `holding`
            del self._locks[uuid]
        self.reports.retain("volume", view.volumes)
        self.reports.retain("migration", view.volumes)
        self.reports.retain("storage", {f"{uuid}.{self.host_uuid}" for uuid in self.stores})

    def _isos(self, view: HostView, changed: set[str]) -> list[str]:
        """Fetch and pin the ISO images this host's VMs have in their cdroms; unpin the others."""
        wanted = _wanted_isos(view)
        errors = []
        for key in set(self.isos) - set(wanted):
            del self.isos[key]
        for (storage, uuid), image in sorted(wanted.items()):
            try:
                store = self._usable(storage)
                cached = store.cache.want(image)
                self.waiting.pop(uuid, None)
                if cached is None:
                    self.waiting[uuid] = f"fetching ({store.cache.progress.get(uuid, 0)} bytes so far)"
                    continue
                store.cache.pin(uuid, True)
                if self.isos.get((storage, uuid)) != cached.path:
                    self.isos[(storage, uuid)] = cached.path
                    changed.add(uuid)
            except StorageError as e:
                self.waiting[uuid] = str(e)
                errors.append(f"ISO image {uuid}: {e}")
        for store in self.stores.values():
            if store.error is None:
                for pin in store.layout.images.glob(f"*/pins/{self.host_uuid}"):
                    if (store.spec.uuid, pin.parent.parent.name) not in wanted:
                        store.cache.pin(pin.parent.parent.name, False)
        return errors

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl or True))
        return self._session

    async def _fetch(self, image: ImageRef, partial: Path, progress: Callable[[int], None]) -> None:
        await fetch(self._http(), image, partial, self._locate, stall=self.settings.fetch_stall,
                    retries=self.settings.fetch_retries, progress=progress)

    def _notify(self, changed: set[str]) -> None:
        if changed:
            for listener in self.listeners:
                listener(changed)


def _wanted_isos(view: HostView) -> dict[tuple[str, str], ImageRef]:
    """The ISO images this host's VMs have in their cdroms, by (storage, image)."""
    wanted: dict[tuple[str, str], ImageRef] = {}
    for vm in view.vms.values():
        iso = vm.cdrom
        if iso is not None and iso.image is not None and iso.storage_uuid is not None:
            wanted[(iso.storage_uuid, iso.image.uuid)] = iso.image
    return wanted
