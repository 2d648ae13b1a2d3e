"""The VM user's caps extended by callers at once, against a stand-in for the mons and cls_lock (no Ceph
needed): threads of one agent and two agents take turns, a dead holder's lock expires, a timed-out write
keeps it, a writer that takes no lock is merged again."""

from __future__ import annotations

import errno
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import rados

import cephagent.cluster as cluster_mod
from cephagent.cluster import LOCK_MUST_RENEW, LOCK_OBJECT, LOCK_POOL, CephCluster, pools_of
from cephagent.errors import CephAgentError, ClusterUnavailable
from testbed.together import at_once

CLIENT = "client.vms"


@dataclass
class Lock:
    cookie: str
    expires: float


@dataclass
class FakeCeph:
    """Users, pools and cls_lock locks as the mons and OSDs keep them; `auth get` answers what it read
    `read_delay` s late, which opens the read-then-write window wide; `hooks[prefix]` runs before a command."""
    read_delay: float = 0.0
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    pools: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # pool -> its applications
    locks: dict[tuple[str, str, str], Lock] = field(default_factory=dict)
    hooks: dict[str, Callable[[], tuple[int, bytes, str] | None]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    mutex: threading.Lock = field(default_factory=threading.Lock)

    def mon_command(self, cmd: str, inbuf: bytes, timeout: int = 0) -> tuple[int, bytes, str]:
        args = json.loads(cmd)
        prefix, entity = args["prefix"], args.get("entity")
        self.calls.append(args)
        if (hook := self.hooks.get(prefix)) and (answer := hook()) is not None:
            return answer
        if prefix == "auth get":
            with self.mutex:
                user = json.loads(json.dumps(self.users.get(entity)))
            time.sleep(self.read_delay)
            if user is None:
                return -errno.ENOENT, b"", f"failed to find {entity} in keyring"
            return 0, json.dumps([{"entity": entity, **user}]).encode(), ""
        caps = dict(zip(args.get("caps", [])[::2], args.get("caps", [])[1::2], strict=True))
        with self.mutex:
            if prefix == "auth get-or-create":
                if entity in self.users and self.users[entity]["caps"] != caps:
                    return -errno.EINVAL, b"", f"key for {entity} exists but cap osd does not match"
                user = self.users.setdefault(entity, {"key": "QVFBa2V5", "caps": caps})
                return 0, json.dumps([{"entity": entity, "key": user["key"]}]).encode(), ""
            if prefix == "auth caps":
                self.users[entity]["caps"] = caps
                return 0, b"", f"updated caps for {entity}"
            if prefix == "osd pool create":
                self.pools.setdefault(args["pool"], {})
                return 0, b"", ""
            if prefix == "osd pool application get":
                return 0, json.dumps(self.pools[args["pool"]]).encode(), ""
            if prefix == "osd pool application enable":
                self.pools[args["pool"]][args["app"]] = {}
                return 0, b"", ""
        if prefix == "mon dump":
            addrs = {"addrvec": [{"type": "v1", "addr": "127.0.0.1:6789"}]}
            return 0, json.dumps({"mons": [{"name": "a", "rank": 0, "public_addrs": addrs}]}).encode(), ""
        if prefix == "quorum_status":
            return 0, json.dumps({"quorum_names": ["a"]}).encode(), ""
        raise AssertionError(f"unexpected mon command {prefix}")

    def lock_exclusive(self, pool: str, key: str, name: str, cookie: str, duration: int, flags: int) -> None:
        with self.mutex:
            now, held = time.monotonic(), self.locks.get((pool, key, name))
            if flags & LOCK_MUST_RENEW and (held is None or held.cookie != cookie):  # run out and taken
                raise rados.ObjectNotFound("not held", errno.ENOENT)  # (an expired one is renewed, as Pacific's)
            if held and held.cookie != cookie and held.expires > now:
                raise rados.ObjectBusy("locked", errno.EBUSY)
            if held and held.cookie == cookie and not flags:
                raise rados.ObjectExists("already held", errno.EEXIST)
            self.locks[(pool, key, name)] = Lock(cookie, now + duration)

    def unlock(self, pool: str, key: str, name: str, cookie: str) -> None:
        with self.mutex:
            held = self.locks.get((pool, key, name))
            if held is None or held.cookie != cookie:
                raise rados.ObjectNotFound("not held", errno.ENOENT)
            del self.locks[(pool, key, name)]

    def holder(self) -> str | None:
        held = self.locks.get((LOCK_POOL, LOCK_OBJECT, "caps"))
        return held.cookie if held and held.expires > time.monotonic() else None

    def pools_of(self, entity: str = CLIENT) -> tuple[set[str], set[str]]:
        return pools_of(self.users[entity]["caps"]["osd"])


class FakeRados:
    """The librados handle one agent holds on the FakeCeph."""

    def __init__(self, ceph: FakeCeph):
        self.ceph = ceph

    def mon_command(self, cmd: str, inbuf: bytes, timeout: int = 0) -> tuple[int, bytes, str]:
        return self.ceph.mon_command(cmd, inbuf, timeout)

    def pool_exists(self, pool: str) -> bool:
        return pool in self.ceph.pools

    def get_fsid(self) -> str:
        return "f" * 32

    def open_ioctx(self, pool: str) -> SimpleNamespace:
        c = self.ceph
        return SimpleNamespace(
            lock_exclusive=lambda key, name, cookie, desc="", duration=None, flags=0:
                c.lock_exclusive(pool, key, name, cookie, duration, flags),
            unlock=lambda key, name, cookie: c.unlock(pool, key, name, cookie), close=lambda: None)


def agent(ceph: FakeCeph, timeout: int = 5) -> CephCluster:
    c = CephCluster(None, "client.admin", mon_host="127.0.0.1:6789", timeout=timeout)
    c._rados = FakeRados(ceph)  # type: ignore[assignment]
    return c


def test_threads_of_two_agents_keep_every_pool():
    """Each caller read the caps, then wrote their union with its pools: without turns the last writer's union
    lacked the others' pools, and all but one creator failed (get-or-create with other caps)."""
    ceph = FakeCeph(read_delay=0.01)
    agents = [agent(ceph), agent(ceph)]
    calls = [lambda i=i: agents[i % 2].secret(CLIENT, [f"vms-{i}"], [f"img-{i}"]) for i in range(6)]
    assert at_once(calls) == []  # created by the first, then extended by the others
    assert at_once([lambda i=i: agents[i % 2].secret(CLIENT, [f"more-{i}"], []) for i in range(6)]) == []
    rw, ro = ceph.pools_of()
    assert rw == {f"vms-{i}" for i in range(6)} | {f"more-{i}" for i in range(6)}
    assert ro == {f"img-{i}" for i in range(6)}
    assert ceph.holder() is None  # released


def test_the_lock_pool_is_made_with_one_pg_for_hoststack_when_missing():
    ceph = FakeCeph()
    a = agent(ceph)
    a.secret(CLIENT, ["vms"], [])
    a.secret(CLIENT, ["vms"], [])
    creates = [c for c in ceph.calls if c["prefix"] == "osd pool create"]
    assert creates == [{"prefix": "osd pool create", "format": "json", "pool": LOCK_POOL, "pg_num": 1, "pgp_num": 1}]
    assert ceph.pools[LOCK_POOL] == {LOCK_POOL: {}}
    assert sum(c["prefix"] == "osd pool application get" for c in ceph.calls) == 1  # remembered
    del ceph.pools[LOCK_POOL]  # by an operator: made again
    a.secret(CLIENT, ["vms"], [])
    assert sum(c["prefix"] == "osd pool create" for c in ceph.calls) == 2 and ceph.pools[LOCK_POOL] == {LOCK_POOL: {}}


def test_an_operators_pool_of_that_name_keeps_its_application():
    ceph = FakeCeph(pools={LOCK_POOL: {"rbd": {}}})
    agent(ceph).secret(CLIENT, ["vms"], [])
    assert ceph.pools[LOCK_POOL] == {"rbd": {}} and ceph.pools_of() == ({"vms"}, set())


def test_a_dead_holders_lock_expires():
    ceph = FakeCeph(pools={LOCK_POOL: {LOCK_POOL: {}}})
    ceph.locks[(LOCK_POOL, LOCK_OBJECT, "caps")] = Lock("dead agent", time.monotonic() + 0.3)
    started = time.monotonic()
    agent(ceph).secret(CLIENT, ["vms"], [])
    assert time.monotonic() - started >= 0.3 and ceph.pools_of() == ({"vms"}, set())


def test_a_lock_held_past_its_lease_and_a_timeout_fails_unavailable(monkeypatch):
    """An agent never waits longer than a holder's lease could last (4 timeouts) and one timeout."""
    ceph = FakeCeph(pools={LOCK_POOL: {LOCK_POOL: {}}})
    ceph.locks[(LOCK_POOL, LOCK_OBJECT, "caps")] = Lock("stuck", time.monotonic() + 3600)
    clock = [0.0]
    monkeypatch.setattr(cluster_mod, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                             sleep=lambda s: clock.__setitem__(0, clock[0] + s)))
    with pytest.raises(ClusterUnavailable, match=r"being changed by another cephagent: lock caps on "
                       r"hoststack/vm-user-caps still held after 25 s"):
        agent(ceph, timeout=5).secret(CLIENT, ["vms"], [])
    assert 25 < clock[0] < 25.2 and CLIENT not in ceph.users


def test_a_timed_out_write_leaves_the_lock_to_expire_and_another_error_releases_it():
    """The mons may still apply a write that timed out: no other agent may read the caps before its lease ends."""
    ceph = FakeCeph()
    a = agent(ceph)
    a.secret(CLIENT, ["vms"], [])
    ceph.hooks["auth caps"] = lambda: (-errno.ETIMEDOUT, b"", "timed out")
    with pytest.raises(ClusterUnavailable):
        a.secret(CLIENT, ["more"], [])
    assert ceph.holder() is not None
    ceph.locks.clear()
    ceph.hooks["auth caps"] = lambda: (-errno.EACCES, b"", "access denied")
    with pytest.raises(CephAgentError, match="EACCES"):
        a.secret(CLIENT, ["more"], [])
    assert ceph.holder() is None


def test_a_writer_that_takes_no_lock_is_merged_again():
    """An agent of an older version wrote its union over ours right after our write: the read-back sees the
    pool missing, and the merge is done again (the lock renewed first)."""
    ceph = FakeCeph()
    a = agent(ceph)
    a.secret(CLIENT, ["vms"], [])
    overwrites = ["profile rbd pool=vms, profile rbd pool=theirs"]

    def theirs_after_ours() -> None:
        if overwrites and ceph.calls[-2]["prefix"] == "auth caps":  # the read-back of our write
            ceph.users[CLIENT]["caps"] = {"mon": "profile rbd", "osd": overwrites.pop()}
    ceph.hooks["auth get"] = theirs_after_ours
    a.secret(CLIENT, ["ours"], [])
    assert ceph.pools_of() == ({"vms", "ours", "theirs"}, set())


def test_a_user_created_meanwhile_by_another_writer_is_merged_into():
    ceph = FakeCeph()
    ceph.hooks["auth get-or-create"] = lambda: (
        ceph.users.setdefault(CLIENT, {"key": "b3RoZXI=", "caps": {"mon": "profile rbd",
                                                                   "osd": "profile rbd pool=theirs"}}) and None)
    s = agent(ceph).secret(CLIENT, ["ours"], [])
    assert s.key == "b3RoZXI=" and ceph.pools_of() == ({"ours", "theirs"}, set())


def test_a_lease_lost_before_another_round_leaves_the_caps_alone():
    ceph = FakeCeph()
    a = agent(ceph)
    a.secret(CLIENT, ["vms"], [])

    def steal() -> None:
        if ceph.calls[-2]["prefix"] == "auth caps":  # the read-back: our write lost, and the lease with it
            ceph.locks[(LOCK_POOL, LOCK_OBJECT, "caps")] = Lock("another agent", time.monotonic() + 60)
            ceph.users[CLIENT]["caps"]["osd"] = "profile rbd pool=vms"
    ceph.hooks["auth get"] = steal
    with pytest.raises(ClusterUnavailable, match="lost the lock on hoststack/vm-user-caps"):
        a.secret(CLIENT, ["ours"], [])
    assert ceph.pools_of() == ({"vms"}, set())
