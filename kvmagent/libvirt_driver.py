"""A narrow asyncio driver over libvirt-python: the only module that imports libvirt.

- Events: libvirtaio dispatches libvirt's event loop on asyncio. libvirt accepts one event
  implementation per process, so it is registered on the first `connect()` (never at import);
  a later event loop (tests) takes it over once the previous loop is closed and idle.
- Blocking calls run on a small thread pool; libvirt errors become `DriverError`/`NoDomain`.
- Closing is orderly: the calls still running on the pool end first (for up to `close_grace`), then the
  connection closes and libvirtaio lets go of its handles and timers, all before the event loop closes.
  A call that returned later would re-arm the connection's socket watch through libvirtaio on the
  closed loop (`add_reader`: "Event loop is closed", a traceback on stderr).
- Liveness: keepalive (5 s x 3) and a close callback; a supervised task reopens the connection
  with backoff after libvirtd goes away and then awaits the `on_reconnect` hooks, which must do a
  full resync (events during the outage are lost). A hook's expected failure (a `HostStackError`,
  such as libvirtd gone again) is logged; any other exception, in a reconnect or an event hook, is
  a bug and ends the process (`agentkit/supervise.py`).
- Domains are addressed by libvirt UUID string.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import libvirt
import libvirtaio

from agentkit.errors import HostStackError
from agentkit.model import VmState
from agentkit.supervise import Supervisor
from kvmagent.errors import DriverError, NoDomain

log = logging.getLogger(__name__)
T = TypeVar("T")
EVENTS = ["DEFINED", "UNDEFINED", "STARTED", "SUSPENDED", "RESUMED", "STOPPED", "SHUTDOWN", "PMSUSPENDED",
          "CRASHED"]
_STATE = {
    libvirt.VIR_DOMAIN_NOSTATE: VmState.UNKNOWN,
    libvirt.VIR_DOMAIN_RUNNING: VmState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: VmState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: VmState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: VmState.RUNNING,
    libvirt.VIR_DOMAIN_SHUTOFF: VmState.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: VmState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: VmState.PAUSED,
}


@dataclass(frozen=True)
class DomainInfo:
    uuid: str
    name: str
    state: VmState
    meta: str | None  # our <metadata> element (None: not a HostStack domain)


@dataclass(frozen=True)
class DomainEvent:
    uuid: str
    name: str
    event: str  # libvirt lifecycle event name, or REBOOTED for a guest reset
    detail: int
    at: float  # time.monotonic() when the callback ran


def migration_state(ev: DomainEvent) -> VmState | None:
    """What a live migration's event says of the domain here: paused for its last copy (the source), or
    running after it (the target); None for any other event. libvirt holds the domain while a migration
    ends, so asking its state then waits for the end: the event says it at once."""
    if ev.event == "SUSPENDED" and ev.detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED:
        return VmState.PAUSED
    if ev.event == "RESUMED" and ev.detail == libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED:
        return VmState.RUNNING
    return None


EventHook = Callable[[DomainEvent], None]
ReconnectHook = Callable[[], Awaitable[None]]


def kvm_usable(dev: str = "/dev/kvm", cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Hardware KVM: /dev/kvm opens and the CPU has VT-x/AMD-V (a PVM-only /dev/kvm has neither)."""
    try:
        os.close(os.open(dev, os.O_RDWR))
        flags = Path(cpuinfo).read_text().split()
    except OSError:
        return False
    return ("vmx" in flags or "svm" in flags) and not Path("/sys/module/kvm_pvm").exists()


def detect_domain_type(setting: str = "auto") -> str:
    """`kvm` or `qemu` from the setting, or detected (`auto`)."""
    if setting in ("kvm", "qemu"):
        return setting
    return "kvm" if kvm_usable() else "qemu"


def console_from_xml(xml: str) -> dict[str, Any] | None:
    """The consoles of a running domain: its graphics protocol and every console kind the agent's tunnel
    can reach (those on unix sockets); None when it has none."""
    devices = ET.fromstring(xml).find("devices")
    if devices is None:
        return None
    kinds = [g.get("type", "") for g in devices.findall("graphics") if g.find("listen[@type='socket']") is not None]
    kinds += ["serial" for s in devices.findall("serial") if s.get("type") == "unix"][:1]
    if not kinds:
        return None
    protocol = next((g.get("type") for g in devices.findall("graphics")), None)
    return {"protocol": protocol, "kinds": kinds}


def _bind_event_impl() -> None:
    """Register libvirtaio once per process; hand it over to a new loop once the old one is closed
    (libvirt cannot unregister an event implementation; test suites run one loop per test)."""
    loop = asyncio.get_running_loop()
    impl = libvirtaio.getCurrentImpl()
    if impl is None:
        libvirt.registerErrorHandler(lambda ctx, err: None, None)  # errors arrive as exceptions
        libvirtaio.virEventRegisterAsyncIOImpl(loop)
    elif impl.loop is not loop:
        if not impl.loop.is_closed():
            raise DriverError("libvirt events are bound to another running event loop")
        impl.loop = loop


async def _events_idle(timeout: float) -> bool:
    """Whether libvirtaio lets go of every handle and timer within `timeout` (libvirt frees those of a closed
    connection through callbacks on the loop; an agent has one connection, so idle means ours are gone).
    Polled: its `drain()` cannot be cancelled (a cancelled one leaves it unable to drain again), and it
    would wait without bound for a connection a running call still holds."""
    impl = libvirtaio.getCurrentImpl()
    deadline = time.monotonic() + timeout
    while impl is not None and not impl.is_idle():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


class LibvirtDriver:
    """One libvirt connection with events, reconnect and domain operations."""

    def __init__(self, uri: str, *, keepalive: tuple[int, int] = (5, 3), reconnect_delay: float = 0.5,
                 tasks: Supervisor | None = None, close_grace: float = 2.0):
        self.uri = uri
        self.keepalive = keepalive
        self.reconnect_delay = reconnect_delay
        self.close_grace = close_grace
        self._conn: libvirt.virConnect | None = None
        self._callbacks: list[int] = []
        self._event_hooks: list[EventHook] = []
        self._reconnect_hooks: list[ReconnectHook] = []
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="libvirt")
        self._running: set[Future[Any]] = set()  # calls on the pool, until they return (a cancel stops none)
        self._lost = asyncio.Event()
        self._tasks = tasks or Supervisor()  # its reconnect loop, and the bugs of hooks
        self._closing = False

    # -- connection ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn is not None

    def on_event(self, hook: EventHook) -> None:
        """`hook(DomainEvent)` runs on the event loop for every lifecycle event of any domain."""
        self._event_hooks.append(hook)

    def on_reconnect(self, hook: ReconnectHook) -> None:
        """`await hook()` after every reconnect (an async callable: a full resync, in order)."""
        self._reconnect_hooks.append(hook)

    async def connect(self, timeout: float | None = None) -> None:
        """Open the connection (retrying until `timeout`) and start the reconnect supervisor."""
        _bind_event_impl()
        self._loop = asyncio.get_running_loop()
        self._lost = asyncio.Event()
        self._closing = False
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.reconnect_delay
        while True:
            try:
                await self._open()
                break
            except DriverError as e:
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise
                log.warning("libvirt %s not reachable (%s); retrying in %.1fs", self.uri, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        self._tasks.start(self._reconnect_loop(), name="libvirt-reconnect")

    async def _open(self) -> None:
        try:
            conn = await self._blocking(lambda: libvirt.open(self.uri))
        except libvirt.libvirtError as e:
            raise DriverError(f"open {self.uri}: {e.get_error_message()}", e.get_error_code()) from e
        try:  # remote connections only; local drivers (test:///) have neither
            conn.setKeepAlive(*self.keepalive)
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise DriverError(f"keepalive on {self.uri}: {e.get_error_message()}", e.get_error_code()) from e
        self._callbacks = [
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None),
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot, None),
        ]
        self._conn = conn
        self._lost.clear()
        log.info("libvirt connected to %s", self.uri)

    def _on_close(self, conn: libvirt.virConnect, reason: int, opaque: Any) -> None:
        """libvirt calls this from the event loop, or from the executor thread whose call the loss ended
        (libvirtd killed mid-call): either way the event loop handles it."""
        log.warning("libvirt connection to %s closed (reason %d)", self.uri, reason)
        self._loop.call_soon_threadsafe(self._lose, conn)

    def _lose(self, conn: libvirt.virConnect) -> None:
        if self._conn is conn:
            self._conn = None
            self._release(conn)
        self._lost.set()

    def _release(self, conn: libvirt.virConnect) -> None:
        """Drop a connection: its callbacks and event-loop handles go with it."""
        with contextlib.suppress(libvirt.libvirtError):
            for cb in self._callbacks:
                conn.domainEventDeregisterAny(cb)
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    async def _reconnect_loop(self) -> None:
        """Reopen after a loss, then let the hooks resync (libvirt does not replay missed events)."""
        while not self._closing:
            await self._lost.wait()
            if self._closing:
                return
            delay = self.reconnect_delay
            while not self._closing:
                try:
                    await self._open()
                    break
                except DriverError as e:
                    log.info("libvirt reconnect failed: %s", e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5)
            for hook in self._reconnect_hooks:
                try:
                    await hook()
                except HostStackError as e:  # e.g. libvirtd went away again: the next reconnect resyncs
                    log.warning("resync after libvirt reconnect failed: %s", e)

    async def close(self) -> None:
        """Stop the reconnect loop, let the calls still running end (up to `close_grace`: each holds the
        connection), close it, and wait until libvirtaio has run the free callbacks of its handles."""
        self._closing = True
        await self._tasks.stop()
        deadline = time.monotonic() + self.close_grace
        if running := list(self._running):
            await asyncio.wait([asyncio.wrap_future(f) for f in running], timeout=self.close_grace)
        conn, self._conn = self._conn, None
        if conn is not None:
            self._release(conn)
        if conn is not None or running:
            idle = await _events_idle(max(deadline - time.monotonic(), 0.1))
            if not idle or self._running:
                log.warning("libvirt still busy at close: %d calls running (a live migration goes on in libvirtd)",
                            len(self._running))
        self._pool.shutdown(wait=False)

    # -- events -------------------------------------------------------------------------------
    def _emit(self, dom: libvirt.virDomain, event: str, detail: int) -> None:
        ev = DomainEvent(dom.UUIDString(), dom.name(), event, detail, time.monotonic())
        for hook in self._event_hooks:
            try:
                hook(ev)
            except Exception as e:  # libvirt's C caller would swallow it: a bug, hand it to the supervisor
                self._tasks.start(_reraise(e), name=f"event hook for {ev.name}")

    def _on_lifecycle(self, conn: Any, dom: libvirt.virDomain, event: int, detail: int, opaque: Any) -> None:
        self._emit(dom, EVENTS[event] if event < len(EVENTS) else str(event), detail)

    def _on_reboot(self, conn: Any, dom: libvirt.virDomain, opaque: Any) -> None:
        self._emit(dom, "REBOOTED", 0)

    # -- blocking calls -----------------------------------------------------------------------
    async def _call(self, what: str, fn: Callable[[libvirt.virConnect], T]) -> T:
        conn = self._conn
        if conn is None:
            raise DriverError(f"{what}: not connected to {self.uri}")

        def call() -> T:
            try:
                return fn(conn)
            except libvirt.libvirtError as e:
                cls = NoDomain if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN else DriverError
                raise cls(f"{what}: {e.get_error_message()}", e.get_error_code()) from e

        return await self._blocking(call)

    async def _blocking(self, fn: Callable[[], T]) -> T:
        """`fn()` on the pool; `close()` waits for it even when the caller was cancelled meanwhile."""
        future = self._pool.submit(fn)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        return await asyncio.wrap_future(future)

    async def _dom(self, uuid: str, what: str, fn: Callable[[libvirt.virDomain], T]) -> T:
        return await self._call(f"{what} {uuid}", lambda c: fn(c.lookupByUUIDString(uuid)))

    @staticmethod
    def _flags(dom: libvirt.virDomain) -> int:
        """Change the running domain and its persistent definition, or only the latter."""
        live: int = libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0
        config: int = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        return live | config

    # -- secrets (cephx keys for RBD disks) -----------------------------------------------------
    async def secrets(self) -> dict[str, str]:
        """uuid -> usage id of every ceph secret libvirt holds."""
        def ceph(c: libvirt.virConnect) -> dict[str, str]:
            return {s.UUIDString(): s.usageID() for s in c.listAllSecrets()
                    if s.usageType() == libvirt.VIR_SECRET_USAGE_TYPE_CEPH}

        return await self._call("list secrets", ceph)

    async def set_secret(self, xml: str, value: bytes) -> None:
        await self._call("define secret", lambda c: c.secretDefineXML(xml).setValue(value))

    async def remove_secret(self, uuid: str) -> None:
        await self._call(f"undefine secret {uuid}", lambda c: c.secretLookupByUUIDString(uuid).undefine())

    # -- domain operations --------------------------------------------------------------------
    async def define(self, xml: str) -> str:
        uuid: str = await self._call("define", lambda c: c.defineXML(xml).UUIDString())
        return uuid

    async def start(self, uuid: str) -> None:
        await self._dom(uuid, "start", lambda d: d.create())

    async def shutdown(self, uuid: str) -> None:
        """Ask the guest to power off (ACPI); returns at once."""
        await self._dom(uuid, "shutdown", lambda d: d.shutdown())

    async def stop(self, uuid: str, timeout: float, repeat: float = 3.0) -> bool:
        """Graceful stop, forced after `timeout` s; True when the guest stopped by itself.

        The ACPI request is repeated every `repeat` s: a guest still booting misses the first one."""
        deadline = time.monotonic() + timeout
        next_request = 0.0
        while time.monotonic() < deadline:
            if not await self._dom(uuid, "state", lambda d: d.isActive()):
                return True
            if time.monotonic() >= next_request:
                with contextlib.suppress(DriverError):
                    await self.shutdown(uuid)
                next_request = time.monotonic() + repeat
            await asyncio.sleep(0.25)
        await self.destroy(uuid)
        return False

    async def destroy(self, uuid: str) -> None:
        """Force off; a domain that is not running (or stops meanwhile) is fine."""
        def destroy(d: libvirt.virDomain) -> None:
            try:
                d.destroy()
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise

        await self._dom(uuid, "destroy", destroy)

    async def pause(self, uuid: str) -> None:
        await self._dom(uuid, "pause", lambda d: d.suspend())

    async def resume(self, uuid: str) -> None:
        await self._dom(uuid, "resume", lambda d: d.resume())

    async def migrate(self, uuid: str, dest_uri: str, data_uri: str) -> None:
        """Move the running domain live, peer to peer: this libvirtd connects to the target's (`dest_uri`),
        qemu streams memory to `data_uri`; the target keeps it defined, this host undefines it once it runs
        there. Disks are on storage both hosts reach (the coordinator checked), so none is copied; libvirt
        cannot tell every shared filesystem apart from a local one, hence UNSAFE. Blocks one worker
        thread for the migration's length."""
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
                 | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_UNSAFE)
        params = {libvirt.VIR_MIGRATE_PARAM_URI: data_uri}
        await self._dom(uuid, "migrate", lambda d: d.migrateToURI3(dest_uri, params, flags))

    async def sending(self, uuid: str) -> bool:
        """Does libvirt run a live migration of the domain out of this host (one an agent before a restart
        began, too)?"""
        def out(d: libvirt.virDomain) -> bool:
            stats = d.jobStats()
            return bool(stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE
                        and stats.get("operation") == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT)
        return await self._dom(uuid, "read the job of", out)

    async def stopped_here(self, uuid: str) -> bool:
        """Is the domain shut off for a reason of this host's (its guest powered off, destroyed, crashed), not
        because it migrated out? With no send of the caller's under way, such a domain has not left: libvirt
        fails an outgoing migration whose qemu stopped before its end (the target drops its copy) and
        undefines the domain here once one succeeded (UNDEFINE_SOURCE). False when it is gone."""
        try:
            return await self._dom(uuid, "get state of", lambda d: _stopped_here(*d.state()))
        except NoDomain:
            return False

    async def abort_migration(self, uuid: str) -> None:
        """Abort the domain's outgoing live migration: it runs on here (libvirt refuses in a phase past return)."""
        await self._dom(uuid, "abort the migration of", lambda d: d.abortJob())

    async def undefine(self, uuid: str) -> None:
        flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        await self._dom(uuid, "undefine", lambda d: d.undefineFlags(flags))

    async def change_media(self, uuid: str, xml: str) -> None:
        """Change a cdrom's media in place, live when running; forced, like pressing eject on the
        host: a guest that keeps the tray locked (a mounted ISO) does not block the change."""
        force = libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE
        await self._dom(uuid, "change media of", lambda d: d.updateDeviceFlags(xml, self._flags(d) | force))

    async def attach_device(self, uuid: str, xml: str) -> None:
        await self._dom(uuid, "attach device", lambda d: d.attachDeviceFlags(xml, self._flags(d)))

    async def detach_alias(self, uuid: str, alias: str) -> None:
        """Request the removal of a device from the running domain by alias (the guest completes the unplug;
        one that misses the request, still booting, is asked again). Live only: the persistent definition
        is the converger's render, defined after it, and would refuse a second request for a device it
        no longer has."""
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE
        await self._dom(uuid, f"detach {alias} from", lambda d: d.detachDeviceAlias(alias, flags))

    async def disk_sources(self) -> dict[str, list[tuple[str, str]]]:
        """Every running domain's file disks: libvirt uuid -> [(target dev, source file)] (what qemu has open)."""
        def sources(c: libvirt.virConnect) -> dict[str, list[tuple[str, str]]]:
            out = {}
            for d in c.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):  # stopped meanwhile
                    out[d.UUIDString()] = _file_disks(d.XMLDesc(0))
            return out

        return await self._call("list disk sources", sources)

    async def block_resize(self, uuid: str, target: str, size: int) -> None:
        """Grow a running domain's disk (the guest sees the new size at once)."""
        flags = libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES
        await self._dom(uuid, f"resize {target} of", lambda d: d.blockResize(target, size, flags))

    async def disk_snapshot(self, uuid: str, xml: str) -> None:
        """An external disk-only snapshot of a running domain into overlays we made (`REUSE_EXT`): qemu
        switches to them atomically; no libvirt snapshot metadata is kept (our volume record is the truth)."""
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
                 | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
        await self._dom(uuid, "disk snapshot of", lambda d: d.snapshotCreateXML(xml, flags))

    async def set_metadata(self, uuid: str, xml: str, prefix: str, ns: str) -> None:
        kind = libvirt.VIR_DOMAIN_METADATA_ELEMENT
        await self._dom(uuid, "set metadata", lambda d: d.setMetadata(kind, xml, prefix, ns, self._flags(d)))

    async def xml(self, uuid: str, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        xml: str = await self._dom(uuid, "get xml of", lambda d: d.XMLDesc(flags))
        return xml

    async def state(self, uuid: str) -> VmState:
        state, reason = await self._dom(uuid, "get state of", lambda d: d.state())
        return _state(state, reason)

    async def observe(self, uuid: str, known_id: int | None = None,
                      incoming: bool = False) -> tuple[VmState, int, str | None]:
        """State, domain id (new at every start; -1 when off) and the live XML unless the running
        instance is `known_id` (its console cannot have moved), in one hop to the pool. `incoming`: the
        domain is the target of a live migration (see `_state`)."""
        def get(d: libvirt.virDomain) -> tuple[VmState, int, str | None]:
            raw = d.state()
            dom_id = d.ID() if raw[0] != libvirt.VIR_DOMAIN_SHUTOFF else -1
            xml = d.XMLDesc(0) if dom_id not in (-1, known_id) else None
            return _state(raw[0], raw[1], incoming), dom_id, xml

        return await self._dom(uuid, "observe", get)

    async def list_domains(self, ns: str) -> list[DomainInfo]:
        """Every domain with its state and its metadata element in namespace `ns` (if any)."""
        def list_all(c: libvirt.virConnect) -> list[DomainInfo]:
            out = []
            for d in c.listAllDomains():
                with contextlib.suppress(libvirt.libvirtError):  # undefined meanwhile
                    out.append(_info(d, ns))
            return out

        return await self._call("list domains", list_all)

    async def domain_info(self, uuid: str, ns: str) -> DomainInfo | None:
        try:
            return await self._dom(uuid, "inspect", lambda d: _info(d, ns))
        except NoDomain:
            return None


async def _reraise(exc: Exception) -> None:
    raise exc


def _file_disks(xml: str) -> list[tuple[str, str]]:
    out = []
    for disk in ET.fromstring(xml).findall("devices/disk"):
        src, target = disk.find("source"), disk.find("target")
        if src is not None and src.get("file") and target is not None:
            out.append((target.get("dev", ""), src.get("file", "")))
    return out


def _info(d: libvirt.virDomain, ns: str) -> DomainInfo:
    try:
        meta = d.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, ns)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            raise
        meta = None
    return DomainInfo(d.UUIDString(), d.name(), _state(*d.state()), meta)


def _stopped_here(state: int, reason: int) -> bool:
    """Shut off, and not by a live migration out of this host (`LibvirtDriver.stopped_here`)."""
    return state == libvirt.VIR_DOMAIN_SHUTOFF and reason != libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED


def _state(state: int, reason: int, incoming: bool = False) -> VmState:
    """libvirt's (state, reason) in the VMs' vocabulary. qemu starts paused for a moment, which is not the
    user's pause; but the target of a live migration (`incoming`) starts so too, and runs only once its
    memory has arrived: taking it for running then had the target report the VM arrived while the source
    still ran it (the source let go of its EIPs, its domain went, the migration failed)."""
    if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
        return VmState.CRASHED
    if state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_STARTING_UP:
        return VmState.PAUSED if incoming else VmState.RUNNING
    return _STATE.get(state, VmState.UNKNOWN)
