"""The mons of a Ceph storage: monUrls parsed, their agents asked which cluster they serve (every mon of a
storage must report its fsid: the one-cluster rule, cephagent/fsid.py), mons added (their missing cephagents
deployed first: monhosts.py) and removed."""

from __future__ import annotations

from agentkit.errors import Invalid
from cephagent.client import CephAgentClient, probe
from cephagent.errors import CephAgentError, InvalidMonUrl
from cephagent.monurl import FIELD, MonUrl, parse_list
from cephagent.wire import ClusterInfo
from coordinator.domain.ceph.agents import Agents, agent_error
from coordinator.domain.ceph.errors import AgentFailed, AlreadyExists, LastMon, UnknownReference
from coordinator.domain.ceph.monhosts import HostKeys, ensure_agents
from coordinator.domain.ceph.records import KIND_NAMES, Kind, MonRecord, StorageRecord, load_storage
from coordinator.domain.ceph.views import StorageView, describe
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Store, Txn
from coordinator.settings import CoordinatorSettings

MonUrls = list[str] | str
MAX_MONS = 16
HOSTNAMES_FIELD = "mon_hostnames"


def parse_mons(urls: MonUrls) -> list[MonUrl]:
    """monUrls as a list or one comma-separated string; `invalid_mon_url` naming the position."""
    if isinstance(urls, list) and len(urls) > MAX_MONS:
        raise InvalidMonUrl(f"at most {MAX_MONS} {FIELD}", field=FIELD)
    return parse_list(urls)


async def cluster_of(agents: Agents, mons: list[MonUrl], expected: str | None = None
                     ) -> tuple[str, dict[str, ClusterInfo]]:
    """The fsid all the mons' agents agree on, and each mon host's answer; errors name the mon by its
    redacted monUrl. An unreachable agent is the caller's mistake (a mistyped mon_server_ip): 400."""
    clients: dict[str, CephAgentClient] = {m.redacted: agents.client(m.host, timeout=15) for m in mons}
    try:
        fsid, infos = await probe(clients, expected)
    except CephAgentError as e:
        if e.code == "agent_unreachable":
            raise AgentFailed(400, e.code, e.message, FIELD) from None
        raise agent_error(e, FIELD) from None
    return fsid, {m.host: infos[m.redacted] for m in mons}


def _refuse_known(rec: StorageRecord, new: list[MonUrl]) -> None:
    have = {(m.host, m.mon_port) for m in rec.mons}
    dup = [m.redacted for m in new if (m.host, m.mon_port) in have]
    if dup:
        raise AlreadyExists(f"{rec.title} already has mon {', '.join(dup)}", field=FIELD)


async def add_mons(store: Store, settings: CoordinatorSettings, kind: Kind, ref: str, urls: MonUrls, *,
                   host_keys: HostKeys | None = None, wait: float = 0) -> StorageView:
    """Add mons whose agents (deployed where missing, waited for up to `wait` seconds) report the storage's fsid;
    the storage as its agents see it now."""
    new = parse_mons(urls)
    rec, _ = await load_storage(store, kind, ref)
    _refuse_known(rec, new)
    await ensure_agents(store, settings, new, host_keys, wait)
    async with Agents(settings, store=store) as agents:
        await cluster_of(agents, new, expected=rec.fsid)

        async def attempt(_: int) -> StorageRecord | None:
            rec, entry = await load_storage(store, kind, ref)
            _refuse_known(rec, new)
            rec.mons += [MonRecord.of(m, settings) for m in new]
            txn = Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, rec.model_dump())
            return rec if await store.commit(txn) is not None else None

        rec = await retry_cas(attempt, KIND_NAMES[kind])
        return describe(rec, await agents.survey(rec))


async def remove_mons(store: Store, kind: Kind, ref: str, refs: list[str]) -> StorageView:
    """Remove mons named by host (all its mons) or `host:mon_port`; a storage keeps at least one."""
    if not refs:
        raise Invalid(f"{HOSTNAMES_FIELD} names no mon", field=HOSTNAMES_FIELD)

    async def attempt(_: int) -> StorageRecord | None:
        rec, entry = await load_storage(store, kind, ref)
        unknown = [r for r in refs if not any(m.matches(r) for m in rec.mons)]
        if unknown:
            raise UnknownReference(f"{rec.title} has no mon {', '.join(unknown)} (its mons: "
                                   f"{', '.join(m.addr for m in rec.mons)})", field=HOSTNAMES_FIELD)
        rec.mons = [m for m in rec.mons if not any(m.matches(r) for r in refs)]
        if not rec.mons:
            raise LastMon(what=KIND_NAMES[kind], name=rec.name, field=HOSTNAMES_FIELD)
        txn = Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, rec.model_dump())
        return rec if await store.commit(txn) is not None else None

    return describe(await retry_cas(attempt, KIND_NAMES[kind]), None)
