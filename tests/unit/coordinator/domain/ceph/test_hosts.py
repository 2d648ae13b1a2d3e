"""Ceph hosts' liveness (coordinator/domain/ceph/hosts.py) against stand-in cephagents on loopback: an answer
is a heartbeat; nothing an agent answers ends the elected replica's check."""

from __future__ import annotations

from coordinator.domain.ceph.hosts import CephHostLiveness
from coordinator.domain.hosts import Host
from coordinator.etcd import keys

from ..memstore import MemoryStore
from .standin import HEALTH, settings


def ceph_host(n: int) -> Host:
    """The ceph host at 127.0.0.<n>; its agent takes the shared cephagent_token."""
    return Host(uuid=f"c{n}", name=f"mon{n}", address=f"127.0.0.{n}", kind="ceph", token_sha256="", created=0.0)


async def test_only_agents_that_answer_as_cephagents_beat_and_nothing_they_answer_ends_the_check(stand_in):
    port = await stand_in("127.0.0.1")
    await stand_in("127.0.0.2", port=port, health=["not", "a", "health", "answer"])
    await stand_in("127.0.0.3", port=port, health="ok")
    await stand_in("127.0.0.4", port=port, health={"status": "ok"})  # no version: no cephagent's answer
    await stand_in("127.0.0.5", port=port, health=HEALTH | {"version": "9" * 101})  # more than etcd should keep
    store = MemoryStore()
    for n in range(1, 6):
        await store.put(keys.host(f"c{n}"), ceph_host(n).record())
    liveness = CephHostLiveness(store, settings(port))
    for _ in range(2):
        await liveness.check()
    beats, _ = await store.list(keys.alive(""))
    assert [e.key for e in beats] == [keys.alive("c1")]
    versions = [Host.model_validate(e.value).agent_version for e in (await store.list(keys.HOSTS))[0]]
    assert versions == ["9.9", None, None, None, None]


async def test_the_session_a_cephagent_answers_with_is_its_hosts_and_a_malformed_one_is_no_answer(stand_in):
    port = await stand_in("127.0.0.1", health=HEALTH | {"session": "s" * 32})
    await stand_in("127.0.0.2", port=port, health=HEALTH | {"session": "no session\x1b[2J"})
    store = MemoryStore()
    for n in (1, 2):
        await store.put(keys.host(f"c{n}"), ceph_host(n).record())
    await CephHostLiveness(store, settings(port)).check()
    beats, _ = await store.list(keys.alive(""))
    assert [e.key for e in beats] == [keys.alive("c1")]
    assert (await store.get(keys.host("c1"))).value["agent_session"] == "s" * 32
