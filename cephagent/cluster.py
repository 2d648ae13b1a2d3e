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
import re
from collections.abc import Iterator
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
        reads on `read_only` (the user is created so if it does not exist); it never gets more."""
        try:
            user = self.command("auth get", entity=client)[0]
        except NotFound:
            caps = vm_caps(set(pools), set(read_only))
            key = self.command("auth get-or-create", entity=client, caps=caps)[0]["key"]
            log.info("created cephx user for VMs", extra={"fields": {"client": client, "caps": caps}})
        else:
            key = user["key"]
            rw, ro = pools_of(user.get("caps", {}).get("osd", ""))
            caps = vm_caps(rw | set(pools), ro | set(read_only))
            if user.get("caps") != dict(zip(caps[::2], caps[1::2], strict=True)):  # extended, or narrowed back
                self.command("auth caps", entity=client, caps=caps)
                log.info("cephx user for VMs now has caps %s", caps, extra={"fields": {"client": client}})
        return CephSecret(user=client.removeprefix("client."), key=key, fsid=self.fsid(),
                          monitors=[m.addr for m in self.mons()])
