"""One librados connection: cluster identity, health, mons, capacity, pools and the cephx secret for VMs.

librados handles are thread-safe and every call here blocks, so the HTTP layer runs them in worker
threads. Failures become `cephagent.errors` (a missing pool is `PoolNotFound`, a timeout
`ClusterUnavailable`); callers never see a rados exception.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import rados
import rbd
from rados import Ioctx

from cephagent.errors import CephAgentError, ClusterUnavailable, Conflict, NotFound, NotPermitted, PoolNotFound
from cephagent.wire import Capacity, CephSecret, ClusterInfo, Health, MonInfo, PoolInfo, PoolRequest, PoolResult

log = logging.getLogger(__name__)
RBD_APP = "rbd"
_POOL_CAP = re.compile(r"^profile (rbd|rbd-read-only) pool=(\S+)$")
# Where the cephagents of one cluster take turns changing the VM user's caps: an exclusive RADOS lock on one
# object of HostStack's own pool (made with one PG when missing), the same name for every agent, whatever its
# settings or the pools it is asked for.
LOCK_POOL, LOCK_OBJECT, LOCK_NAME = "hoststack", "vm-user-caps", "caps"
LOCK_MUST_RENEW = 0x2  # cls_lock's LOCK_FLAG_MUST_RENEW: renew our lease, ENOENT once another took the lock
CAPS_ATTEMPTS = 3


def vm_caps(pools: set[str], read_only: set[str]) -> list[str]:
    """A VM user's caps: RBD on `pools`, RBD reads on `read_only` (images VMs clone from), nothing else."""
    osd = [f"profile rbd pool={p}" for p in sorted(pools)]
    osd += [f"profile rbd-read-only pool={p}" for p in sorted(read_only - pools)]
    return ["mon", "profile rbd", "osd", ", ".join(osd)]


def pools_of(osd_caps: str) -> tuple[set[str], set[str]]:
    """The pools (read-write, read-only) a VM user's osd caps name."""
    rw: set[str] = set()
    ro: set[str] = set()
    for grant in osd_caps.split(","):
        if m := _POOL_CAP.match(grant.strip()):
            (rw if m.group(1) == "rbd" else ro).add(m.group(2))
    return rw, ro


@contextlib.contextmanager
def unavailable_on_timeout() -> Iterator[None]:
    """Turn 'the cluster did not answer' errors of any rados/rbd call into ClusterUnavailable."""
    try:
        yield
    except (rados.TimedOut, rados.ConnectionShutdown, rbd.Timeout, rbd.ConnectionShutdown) as e:
        raise ClusterUnavailable(reason=str(e)) from e


class CephCluster:
    """Connect with `connect()`; `conf_path=None` means no ceph.conf (then give `mon_host` and `keyring`)."""

    def __init__(self, conf_path: str | None, client: str = "client.admin", keyring: str | None = None,
                 mon_host: str | None = None, timeout: int = 30):
        self.conf_path = conf_path
        self.client = client
        self.keyring = keyring
        self.mon_host = mon_host
        self.timeout = timeout
        self._rados: rados.Rados | None = None
        self._caps_lock = threading.Lock()  # this agent's threads queue here, not on the RADOS lock
        self._lock_pool_ready = False

    def connect(self) -> None:
        """Connect, or ClusterUnavailable saying why; a keyring that cannot be read is named (librados says
        'object not found', or without a ceph.conf turns cephx off and times out)."""
        if self.keyring:
            try:
                Path(self.keyring).read_bytes()
            except OSError as e:
                raise ClusterUnavailable(reason=f"keyring {self.keyring} of {self.client}: {e.strerror}") from e
        conf = {"rados_mon_op_timeout": str(self.timeout), "rados_osd_op_timeout": str(self.timeout),
                "client_mount_timeout": str(self.timeout)}
        if self.keyring:
            conf["keyring"] = self.keyring
        if self.mon_host:
            conf["mon_host"] = self.mon_host
        try:
            handle = rados.Rados(name=self.client, conffile=self.conf_path or rados.Rados.NO_CONF_FILE, conf=conf)
            handle.connect(timeout=self.timeout)
        except rados.Error as e:
            raise ClusterUnavailable(reason=f"connecting as {self.client} ({self.conf_path or self.mon_host}): {e}") \
                from e
        self._rados = handle
        log.info("connected to ceph", extra={"fields": {"fsid": handle.get_fsid(), "client": self.client}})

    def close(self) -> None:
        if self._rados is not None:
            self._rados.shutdown()
            self._rados = None

    @property
    def rados(self) -> rados.Rados:
        if self._rados is None:
            raise ClusterUnavailable(reason="not connected")
        return self._rados

    @contextlib.contextmanager
    def ioctx(self, pool: str, field: str | None = "pool") -> Iterator[Ioctx]:
        """An I/O context on `pool`; PoolNotFound (naming `field`) when the pool does not exist, NotPermitted
        when the agent's cephx user lacks the caps for what is done in it."""
        try:
            with unavailable_on_timeout():
                try:
                    io = self.rados.open_ioctx(pool)
                except rados.ObjectNotFound:
                    raise PoolNotFound(field=field, pool=pool) from None
                try:
                    yield io
                finally:
                    io.close()
        except (rados.PermissionError, rados.PermissionDeniedError, rbd.PermissionError) as e:
            raise NotPermitted(client=self.client, pool=pool, reason=str(e)) from e

    def command(self, prefix: str, inbuf: bytes = b"", **args: Any) -> Any:
        """A mon command with JSON output; Ceph's own message on failure."""
        cmd = json.dumps({"prefix": prefix, "format": "json", **args})
        with unavailable_on_timeout():
            ret, out, err = self.rados.mon_command(cmd, inbuf, timeout=self.timeout)
        if ret == -errno.ETIMEDOUT:
            raise ClusterUnavailable(reason=f"ceph {prefix}: {err}")
        if ret == -errno.ENOENT:
            raise NotFound(message=f"ceph {prefix}: {err}")
        if ret < 0:
            raise CephAgentError(message=f"ceph {prefix} failed ({errno.errorcode.get(-ret, ret)}): {err}")
        return json.loads(out) if out else None

    def fsid(self) -> str:
        with unavailable_on_timeout():
            fsid: str = self.rados.get_fsid()
        return fsid

    def health(self) -> Health:
        doc = self.command("health")
        checks = {name: f"{c['severity']}: {c['summary']['message']}" for name, c in doc.get("checks", {}).items()}
        return Health(status=doc["status"], checks=checks)

    def mons(self) -> list[MonInfo]:
        monmap = self.command("mon dump")
        quorum = set(self.command("quorum_status")["quorum_names"])
        result = []
        for m in monmap["mons"]:
            addrs = [a["addr"] for a in m["public_addrs"]["addrvec"]]
            v1 = [a["addr"] for a in m["public_addrs"]["addrvec"] if a["type"] == "v1"]
            result.append(MonInfo(name=m["name"], rank=m["rank"], addr=(v1 or addrs)[0], addrs=addrs,
                                  in_quorum=m["name"] in quorum))
        return result

    def usage(self) -> tuple[Capacity, list[PoolInfo]]:
        """Cluster and per-pool capacity from `ceph df`.

        The figures come from the mgr every few seconds, so a pool created a moment ago is not in them
        yet: it is listed (from the osdmap) as empty, with the raw space available divided by its
        replica count.
        """
        df = self.command("df")
        s = df["stats"]
        cap = Capacity(total=s["total_bytes"], available=s["total_avail_bytes"], used=s["total_used_raw_bytes"])
        stats = {p["name"]: p["stats"] for p in df["pools"]}
        pools = []
        for p in self.command("osd pool ls", detail="detail"):
            st = stats.get(p["pool_name"]) or {"stored": 0, "bytes_used": 0, "objects": 0,
                                               "max_avail": cap.available // max(1, p["size"])}
            pools.append(PoolInfo(name=p["pool_name"], id=p["pool_id"], stored=st["stored"], used=st["bytes_used"],
                                  available=st["max_avail"], total=st["bytes_used"] + st["max_avail"],
                                  objects=st["objects"]))
        return cap, pools

    def full(self, pool: str) -> str | None:
        """Why writes to `pool` wait, if the osdmap says they do: the pool's full flags (its quota reached, or
        OSDs full), e.g. `full,full_quota`; None when it is not full or the mons do not answer."""
        try:
            pools = self.command("osd dump")["pools"]
        except CephAgentError:
            return None
        flags = [f for p in pools if p["pool_name"] == pool for f in p.get("flags_names", "").split(",")]
        return ",".join(f for f in flags if f.startswith("full")) or None

    def info(self) -> ClusterInfo:
        cap, pools = self.usage()
        return ClusterInfo(fsid=self.fsid(), health=self.health(), mons=self.mons(), capacity=cap, pools=pools)

    def ensure_pool(self, req: PoolRequest) -> PoolResult:
        """The seeds' pool rule: use the pool if it exists; if it was named but is missing, fail and create
        nothing; otherwise create it with the cluster's default settings, tagged for RBD."""
        with unavailable_on_timeout():
            exists = self.rados.pool_exists(req.name)
        if exists:
            self._claim_for_rbd(req.name)
            return PoolResult(name=req.name, created=False)
        if req.must_exist:
            raise PoolNotFound(field="name", pool=req.name)
        with unavailable_on_timeout():
            try:
                self.rados.create_pool(req.name)
            except rados.ObjectExists:  # created concurrently by another caller: same outcome
                return PoolResult(name=req.name, created=False)
        self._claim_for_rbd(req.name)
        log.info("created pool", extra={"fields": {"pool": req.name}})
        return PoolResult(name=req.name, created=True)

    def _claim_for_rbd(self, pool: str) -> None:
        """Tag an untagged pool for RBD and initialise it; refuse a pool another application owns."""
        apps = self.command("osd pool application get", pool=pool) or {}
        if RBD_APP in apps:
            return
        if apps:
            raise Conflict(field="name", message=f"pool {pool!r} belongs to application(s) {', '.join(apps)}, not rbd")
        self.command("osd pool application enable", pool=pool, app=RBD_APP)
        with self.ioctx(pool, field="name") as io:
            rbd.RBD().pool_init(io, False)

    def secret(self, client: str, pools: list[str], read_only: list[str]) -> CephSecret:
        """The cephx key of VM user `client` for libvirt secrets, its caps extended to RBD on `pools` and RBD
        reads on `read_only` (the user is created so if it does not exist); it never gets more.

        Extending is read-then-write (`auth caps` replaces all caps), so two callers at once asking for
        different pools, threads of this agent or agents on other mon hosts, could each write the union of
        what they read and their own pools, the later losing the earlier's grant. Callers therefore take
        turns: this agent's threads on a lock of the process, the cluster's agents on `cluster_lock`. Under
        both, the read sees every grant written before, and the write adds to it. (Reading back and merging
        again alone would not do: a writer that read before our write may write after our read-back.) The
        lock is in a pool of its own: callers asking for different pools would lock in different ones. The
        caps are read back after the write, and merged again when something asked is missing (a writer that
        takes no lock: an agent of an older version, an operator); a user such a writer created meanwhile is
        merged into.
        """
        with self._caps_lock, self.cluster_lock() as renew:
            key = self._grant(client, set(pools), set(read_only), renew)
        return CephSecret(user=client.removeprefix("client."), key=key, fsid=self.fsid(),
                          monitors=[m.addr for m in self.mons()])

    def _grant(self, client: str, pools: set[str], read_only: set[str], renew: Callable[[], None]) -> str:
        """`secret`'s work under the locks: the user's key once its caps, read back, hold `pools` and `read_only`."""
        error: CephAgentError | None = None
        for attempt in range(CAPS_ATTEMPTS):
            if attempt:
                renew()
            try:
                user = self.command("auth get", entity=client)[0]
            except NotFound:
                caps = vm_caps(pools, read_only)
                try:
                    self.command("auth get-or-create", entity=client, caps=caps)
                except ClusterUnavailable:
                    raise
                except CephAgentError as e:  # made meanwhile with other caps (EINVAL): merge into those
                    error = e
                    continue
                log.info("created cephx user for VMs", extra={"fields": {"client": client, "caps": caps}})
            else:
                rw, ro = pools_of(user.get("caps", {}).get("osd", ""))
                caps = vm_caps(rw | pools, ro | read_only)
                if user.get("caps") == dict(zip(caps[::2], caps[1::2], strict=True)):
                    return str(user["key"])  # read under the locks: it has everything asked already
                self.command("auth caps", entity=client, caps=caps)  # extended, or narrowed back
                log.info("cephx user for VMs now has caps %s", caps, extra={"fields": {"client": client}})
            back = self.command("auth get", entity=client)[0]
            rw, ro = pools_of(back.get("caps", {}).get("osd", ""))
            if pools <= rw and read_only <= rw | ro:
                return str(back["key"])
            error = Conflict(field="pool", message=f"the caps of {client} lost pools right after they were "
                             f"written, {CAPS_ATTEMPTS} times: another writer that takes no lock?")
            log.warning("cephx user for VMs lacks pools it was just given (another writer?): merging again",
                        extra={"fields": {"client": client, "caps": back.get("caps")}})
        assert error is not None
        raise error

    @contextlib.contextmanager
    def cluster_lock(self) -> Iterator[Callable[[], None]]:
        """Hold the cluster's VM-caps lock (LOCK_OBJECT in LOCK_POOL) for one agent's turn; yields `renew`.

        The lock is a lease of 4 timeouts, enough for renewing it and three mon calls (read, write, read
        back), so a dead holder's lock expires; `renew` restarts it before another round (ClusterUnavailable
        when another agent took it after it ran out: cls_lock renews a lapsed lease nobody took, and then
        nobody else went in meanwhile). Waiting for it ends after a lease and a timeout with ClusterUnavailable.
        After a call that timed out the lock is not released but left to expire: the mons may still apply a
        write that timed out here, and no other agent may read the caps before it lands.
        """
        lease = 4 * self.timeout
        cookie, desc = uuid.uuid4().hex, f"cephagent on {socket.gethostname()} pid {os.getpid()}"
        with self.ioctx(self._lock_pool(), field=None) as io:
            deadline = time.monotonic() + lease + self.timeout
            while True:
                with unavailable_on_timeout():
                    try:
                        io.lock_exclusive(LOCK_OBJECT, LOCK_NAME, cookie, desc, lease)
                        break
                    except rados.ObjectBusy:
                        pass
                if time.monotonic() > deadline:
                    raise ClusterUnavailable(reason=f"the VM user's caps are being changed by another cephagent: "
                                             f"lock {LOCK_NAME} on {LOCK_POOL}/{LOCK_OBJECT} still held after "
                                             f"{lease + self.timeout} s")
                time.sleep(random.uniform(0.02, 0.1))  # noqa: S311 - jitter, not a secret

            def renew() -> None:
                with unavailable_on_timeout():
                    try:
                        io.lock_exclusive(LOCK_OBJECT, LOCK_NAME, cookie, desc, lease, LOCK_MUST_RENEW)
                    except rados.ObjectNotFound:
                        raise ClusterUnavailable(reason=f"lost the lock on {LOCK_POOL}/{LOCK_OBJECT} (its lease of "
                                                 f"{lease} s ran out, and another agent took it): the VM user's "
                                                 "caps are left as they are") \
                            from None
            try:
                yield renew
            except ClusterUnavailable:
                raise  # the lease ends it
            except BaseException:
                self._unlock(io, cookie)
                raise
            self._unlock(io, cookie)

    def _unlock(self, io: Ioctx, cookie: str) -> None:
        try:
            with unavailable_on_timeout():
                io.unlock(LOCK_OBJECT, LOCK_NAME, cookie)
        except (ClusterUnavailable, rados.Error) as e:  # its lease ends it
            log.warning("could not release the VM-caps lock", extra={"fields": {"reason": str(e)}})

    def _lock_pool(self) -> str:
        """LOCK_POOL, made when missing (deleted since, too): one PG (it holds one small object), tagged for
        HostStack unless it has an application."""
        with unavailable_on_timeout():
            exists = self.rados.pool_exists(LOCK_POOL)  # the client's osdmap: no mon call while it exists
        if not exists:  # `osd pool create` and `application enable` succeed again for an agent racing us
            self.command("osd pool create", pool=LOCK_POOL, pg_num=1, pgp_num=1)
            log.info("created pool for cephagents' locks", extra={"fields": {"pool": LOCK_POOL}})
            self._lock_pool_ready = False
        if not self._lock_pool_ready:
            if not self.command("osd pool application get", pool=LOCK_POOL):  # an operator's pool keeps its own
                self.command("osd pool application enable", pool=LOCK_POOL, app=LOCK_POOL)
            self._lock_pool_ready = True
        return LOCK_POOL
