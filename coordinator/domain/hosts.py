"""Hosts: the typed record at `/hs/host/<uuid>`, registration with a per-host token, agent connect and
heartbeat, connection state, and the SSH credentials the deployer uses on a host.

SSH credentials are stored Fernet-encrypted (credentials.py) and only ever leave through `reveal_ssh`,
so the elected replica can upgrade an agent unattended; see docs/deployer.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agentkit import sshkeys, tickets
from agentkit.addr import same_host_key
from agentkit.errors import InUse, NotFound
from agentkit.model import HostFacts
from coordinator.domain import credentials
from coordinator.domain.errors import SHOWN, Exists, first_few
from coordinator.domain.filestorage import handover
from coordinator.etcd import keys
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Entry, Store, Txn
from coordinator.settings import CoordinatorSettings

HostKind = Literal["kvm", "ceph", "consoleproxy", "imagestore"]
POLLED: tuple[HostKind, ...] = ("ceph", "imagestore")  # their agents never dial in: the coordinator asks them
HostState = Literal["Connected", "Disconnected"]
HEALTH = "health"  # the observed kind of an agent's health, id its host's uuid
log = logging.getLogger(__name__)


class SshCredentials(BaseModel):
    """How the deployer logs in to a host: a password, a private key file, or ssh's defaults."""

    user: str = Field("root", pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
    port: int = Field(22, ge=1, le=65535)
    password: str | None = Field(None, min_length=1, max_length=1024)
    key_file: str | None = Field(None, min_length=2, max_length=4096, pattern=r"^/[^\x00-\x1f\x7f]+$",
                                 description="private key path (absolute) on the machine that runs the deployer")


SshHostKey = Annotated[str, Field(max_length=16384), AfterValidator(sshkeys.parse)]
SshHostKeys = Annotated[list[SshHostKey], Field(min_length=1, max_length=16)]


class Host(BaseModel):
    """A host as stored. `agent_version` is None until its agent first connected (or, for a ceph host,
    answered); `agent_session` is the session its agent process last (re)connected or answered with (None: an
    agent older than sessions), which a deploy compares; fields written by newer code are kept on rewrite."""

    model_config = ConfigDict(extra="allow")
    uuid: str
    name: str
    address: str
    kind: HostKind
    token_sha256: str
    token_expires: float | None = None
    previous_token_sha256: str | None = None  # the token a renewal was asked with, valid until it expires
    previous_token_expires: float | None = None
    created: float
    facts: HostFacts | None = None
    agent_version: str | None = None
    agent_session: str | None = None
    ssh_secret: str | None = None
    ssh_host_keys: list[str] | None = None  # the only keys deploys accept from this host (agentkit.sshkeys)
    agent_secret: str | None = None  # a polled host's token, Fernet-encrypted: the coordinator presents it
    api_secret: str | None = None  # a KVM host's agent API token (not its token here), Fernet-encrypted

    def record(self) -> dict[str, Any]:
        """The stored form (absent fields stay absent, as they always were)."""
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def title(self) -> str:
        """How messages name it: `host kvm1 (<uuid>)`, the name to read and the uuid to look it up by."""
        return f"host {self.name} ({self.uuid})"


class HostHealth(BaseModel):
    """What a host's agent last reported of its own health (kind `health` of its observed state)."""

    status: Literal["ok", "degraded", "Unknown"] = Field(description="degraded: a component of the agent fails "
                                                         "(`errors`); Unknown: the host is Disconnected, the "
                                                         "errors are its last report's")
    errors: dict[str, str] = Field(description="the agent's failing components and the error of each")
    at: float = Field(description="when the agent saw this (unix time)")


def health_of(observed: object, state: HostState) -> HostHealth | None:
    """The health in a host's observed `health` record, as its connection state lets it be known; None
    when its agent never reported any (one older than health reports, or not a KVM host's)."""
    if not isinstance(observed, dict) or not isinstance(errors := observed.get("errors"), dict):
        return None
    status = "Unknown" if state == "Disconnected" else "degraded" if errors else "ok"
    at = observed.get("at")
    return HostHealth(status=status, errors=errors, at=at if isinstance(at, int | float) else 0.0)


@dataclass(frozen=True)
class HostStatus:
    host: Host
    last_heartbeat: float | None
    state: HostState
    health: HostHealth | None = None
    clock_offset: int | None = None  # seconds the host's clock was ahead of the replica's at that heartbeat


def _status(host: Host, alive: object, observed: object, timeout: float, now: float) -> HostStatus:
    beat = beat_of(alive)
    state = state_of(beat, timeout, now)
    offset = alive.get("clock_offset") if isinstance(alive, dict) else None
    return HostStatus(host, beat, state, health_of(observed, state), offset if isinstance(offset, int) else None)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(settings: CoordinatorSettings, kind: HostKind, deployed: bool = False) -> tuple[str, dict[str, Any]]:
    """A new agent token and the host record fields that keep it (token_fields, and its expiry: only agents
    that dial in renew theirs, so a polled host's token lasts until its next deploy)."""
    token = secrets.token_urlsafe(32)
    lifetime = 0 if kind in POLLED else settings.host_token_lifetime
    return token, {**token_fields(settings, kind, token, deployed),
                   "token_expires": time.time() + lifetime if lifetime else None,
                   "previous_token_sha256": None, "previous_token_expires": None}


def beat_of(alive: object) -> float | None:
    """The time of a heartbeat record (`/hs/alive/<uuid>`: {"at": ..., "replica": ...})."""
    at = alive.get("at") if isinstance(alive, dict) else None
    return float(at) if isinstance(at, int | float) else None


def state_of(beat: float | None, timeout: float, now: float) -> HostState:
    """Connected while the last heartbeat is younger than `timeout`. It was stamped by the replica that took
    it, and is judged here on this replica's clock: a stamp more than `timeout` ahead of it is no heartbeat
    (a replica whose clock is off wrote it), or one stamped years ahead would keep a dead host Connected."""
    return "Connected" if beat is not None and abs(now - beat) < timeout else "Disconnected"


def connected(alive: list[Entry], timeout: float, now: float) -> set[str]:
    """Uuids of the hosts whose last heartbeat is younger than `timeout`."""
    return {e.key[len(keys.ALIVE):] for e in alive if state_of(beat_of(e.value), timeout, now) == "Connected"}


def token_fields(settings: CoordinatorSettings, kind: HostKind, token: str, deployed: bool = False
                 ) -> dict[str, str]:
    """How a host record keeps its agent token: its hash, and for a host whose agent the coordinator calls
    with it the token itself, encrypted: an image store's always, a cephagent's once a deploy gave it the
    token (until then the coordinator presents `cephagent_token`, which hand-deployed agents take)."""
    fields = {"token_sha256": token_hash(token)}
    if kind == "imagestore" or (deployed and kind in POLLED):
        fields["agent_secret"] = credentials.encrypt(settings.secret_key, token)
    return fields


def agent_token_of(settings: CoordinatorSettings, host: Host) -> str | None:
    """The token of a host whose agent the coordinator calls (a cephagent, an image store); raises
    credentials.CredentialError when the key changed."""
    if host.agent_secret is None:
        return None
    return credentials.decrypt(settings.secret_key, host.agent_secret)


async def answered(store: Store, entry: Entry, version: str, replica_id: str, session: str | None = None) -> bool:
    """A polled host's agent answered: its heartbeat, and its version and session when they changed (the agent was
    upgraded, or restarted), in one transaction (never Connected with a stale version or session), only while the
    host exists (deleted while its agent was asked, its `/hs/alive/` record would stay). True when the version
    changed."""
    host = Host.model_validate(entry.value)
    txn = Txn().exists(entry.key).put(keys.alive(host.uuid), _beat(replica_id))
    changed = host.agent_version != version
    if changed or host.agent_session != session:
        new = host.model_copy(update={"agent_version": version, "agent_session": session})
        txn.unchanged(entry.key, entry.mod_revision).put(entry.key, new.record())
    return await store.commit(txn) is not None and changed


def seal_ssh(settings: CoordinatorSettings, ssh: SshCredentials) -> str:
    return credentials.encrypt(settings.secret_key, ssh.model_dump_json())


def open_ssh(settings: CoordinatorSettings, host: Host) -> SshCredentials | None:
    """The host's stored SSH credentials; raises credentials.CredentialError when the key changed."""
    if host.ssh_secret is None:
        return None
    plain = credentials.decrypt(settings.secret_key, host.ssh_secret)
    return SshCredentials.model_validate(json.loads(plain))


async def load(store: Store, uuid: str) -> Host:
    entry = await store.get(keys.host(uuid))
    if entry is None:
        raise NotFound(what="host", ident=uuid)
    return Host.model_validate(entry.value)


async def title_of(store: Store, uuid: str) -> str:
    """The `title` of a host a record refers to, read for an error message (so never on a path that
    succeeds); `host <uuid>` when it is gone."""
    try:
        return (await load(store, uuid)).title
    except NotFound:
        return f"host {uuid}"


async def exists(store: Store, uuid: str) -> bool:
    return await store.get(keys.host(uuid)) is not None


async def all_hosts(store: Store) -> list[Host]:
    entries, _ = await store.list(keys.HOSTS)
    return [Host.model_validate(e.value) for e in entries]


async def find(store: Store, ref: str) -> Host:
    """A host by uuid or by name (names are unique)."""
    entry = await store.get(keys.host(ref))
    if entry:
        return Host.model_validate(entry.value)
    for h in await all_hosts(store):
        if h.name == ref:
            return h
    raise NotFound(what="host", ident=ref)


async def register(store: Store, settings: CoordinatorSettings, name: str, address: str, kind: HostKind,
                   ssh: SshCredentials | None, ssh_host_keys: list[str] | None = None) -> tuple[Host, str]:
    """A new host and its agent token (only its hash is stored, so this is the one time it is seen). Names
    are unique, and so is a kind's host at an address (one machine registered twice: its two agents would share
    one unit, config and install directory). The host is written only if no host was added since the hosts were
    read (on any replica), else they are read again."""
    token, fields = new_token(settings, kind)
    host = Host(uuid=uuidlib.uuid4().hex, name=name, address=address, kind=kind, created=time.time(),
                ssh_secret=seal_ssh(settings, ssh) if ssh is not None else None, ssh_host_keys=ssh_host_keys,
                **fields)
    key, at = keys.host(host.uuid), same_host_key(address)

    async def attempt(_: int) -> bool | None:
        entries, read_at = await store.list(keys.HOSTS)
        others = [Host.model_validate(e.value) for e in entries]
        if any(h.name == name for h in others):
            raise Exists(f"a host named {name} already exists", field="name")
        if twin := next((h for h in others if h.kind == kind and same_host_key(h.address) == at), None):
            raise Exists(f"{twin.title} is the {kind} host at {twin.address} already: an address has one host of "
                         "each kind", field="address")
        txn = Txn().absent(key).none_created_since(keys.HOSTS, read_at).put(key, host.record())
        return True if await store.commit(txn) is not None else None
    await retry_cas(attempt, f"host {name}")
    return host, token


async def statuses(store: Store, timeout: float, health: bool = False) -> list[HostStatus]:
    """Every host with its connection state, and with `health` its health (one consistent read; who only
    picks hosts by state, such as a console's proxy, reads no health reports)."""
    healths = keys.observed(HEALTH, "")
    snap, _ = await store.snapshot([keys.HOSTS, keys.ALIVE, *([healths] if health else [])])
    beats = {e.key[len(keys.ALIVE):]: e.value for e in snap[keys.ALIVE]}
    reports = {e.key[len(healths):]: e.value for e in snap.get(healths, [])}
    now = time.time()
    hosts = [Host.model_validate(e.value) for e in snap[keys.HOSTS]]
    return [_status(h, beats.get(h.uuid), reports.get(h.uuid), timeout, now) for h in hosts]


async def status(store: Store, ref: str, timeout: float) -> HostStatus:
    """A host (by uuid or name) with its connection state and health; by uuid in one etcd request."""
    found, alive, health = await store.get_many([keys.host(ref), keys.alive(ref), keys.observed(HEALTH, ref)])
    if found is not None:
        host = Host.model_validate(found.value)
    else:
        host = await find(store, ref)
        alive, health = await store.get_many([keys.alive(host.uuid), keys.observed(HEALTH, host.uuid)])
    return _status(host, alive.value if alive else None, health.value if health else None, timeout, time.time())


async def delete(store: Store, ref: str) -> None:
    """Forget a host and everything kept for it (what its agent reported, its storages' reservations on it, its
    uuid in storages' `host_uuids`, its last logged state); refused while VMs are placed on it, it holds an image
    store, a storage is attached to it alone, or LocalStorage volumes are on it or migrate to or from it; the shared
    volumes it works on go to other hosts (filestorage/handover.py).
    The delete holds only while the host has no VM and no volume or image store came to it: one placed there since
    it read them (on any replica) fails it, and it reads again."""
    host = await find(store, ref)
    vms = keys.desired_host(host.uuid) + "vm/"

    async def attempt(_: int) -> bool | None:
        if placed := [e.key for e in (await store.list(vms, keys_only=True))[0]]:
            raise InUse(f"host {host.name} still has {len(placed)} VM{'s' if len(placed) > 1 else ''}: "
                        f"{await _vms_named(store, placed)}; delete or move them first")
        stores, stores_at = await store.list(keys.IMAGE_STORES)
        if any(isinstance(e.value, dict) and e.value.get("host_uuid") == host.uuid for e in stores):
            raise InUse(f"host {host.name} holds an image store; delete it first")
        txn = Txn().absent(vms, prefix=True).none_created_since(keys.IMAGE_STORES, stores_at)
        if not await handover.hand_over(store, txn, host.uuid, host.name):
            return False if await store.commit(txn) is not None else None
        txn.delete(keys.host(host.uuid)).delete(keys.alive(host.uuid)).delete(keys.placed(host.uuid))
        txn.delete(keys.observed(HEALTH, host.uuid)).delete(keys.host_state(host.uuid))
        txn.delete(keys.desired_host(host.uuid), prefix=True).delete(keys.observed_seq(host.uuid))
        txn.delete(keys.deploy_log(host.uuid), prefix=True)
        return True if await store.commit(txn) is not None else None
    while not await retry_cas(attempt, f"host {host.name}"):
        pass  # more shared volumes than one transaction moves: a batch went, the rest go with the delete


async def _vms_named(store: Store, placed: list[str]) -> str:
    """The first few VMs of desired keys `placed`, by name and uuid, and how many more."""
    shown = []
    for key, entry in zip(placed, await store.get_many(placed[:SHOWN]), strict=False):
        name = entry.value.get("name") if entry is not None and isinstance(entry.value, dict) else None
        shown.append(f"{name} ({key.rsplit('/', 1)[1]})" if isinstance(name, str) else key.rsplit("/", 1)[1])
    return first_few(shown, len(placed))


def _beat(replica_id: str, clock: float | None = None) -> dict[str, Any]:
    """A heartbeat taken now by `replica_id`; with the sender's `clock` (its `Date`), how far that is ahead of
    this replica's, to the second (shown to operators: the tickets a host checks allow `tickets.SKEW`)."""
    now = time.time()
    return {"at": now, "replica": replica_id, **({"clock_offset": round(clock - now)} if clock is not None else {})}


async def heartbeat(store: Store, uuid: str, replica_id: str, clock: float | None = None) -> None:
    """Record the host's agent alive; NotFound once the host is deleted (a beat let in just before its delete
    would leave a `/hs/alive/` record nothing removes)."""
    if await store.commit(Txn().exists(keys.host(uuid)).put(keys.alive(uuid), _beat(replica_id, clock))) is None:
        raise NotFound(what="host", ident=uuid)


async def update(store: Store, uuid: str, change: Callable[[Host], Host], beat: dict[str, Any] | None = None
                 ) -> Host:
    """Apply `change(host) -> host` with compare-and-swap (agents update their record concurrently);
    with `beat` (a `_beat`) the same transaction records a heartbeat."""
    async def attempt(_: int) -> Host | None:
        entry = await store.get(keys.host(uuid))
        if entry is None:
            raise NotFound(what="host", ident=uuid)
        new = change(Host.model_validate(entry.value))
        txn = Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, new.record())
        if beat is not None:
            txn.put(keys.alive(uuid), beat)
        return new if await store.commit(txn) is not None else None
    return await retry_cas(attempt, f"host {uuid}")


async def connect(store: Store, uuid: str, facts: HostFacts, replica_id: str, clock: float | None = None) -> Host:
    """An agent (re)connects: its facts, version and session are recorded, and it counts as a heartbeat; a clock
    (its `clock`) off this replica's by more than the tickets it checks allow is logged."""
    def change(h: Host) -> Host:
        return h.model_copy(update={"facts": facts, "agent_version": facts.agent_version,
                                    "agent_session": facts.agent_session})
    beat = _beat(replica_id, clock)
    host = await update(store, uuid, change, beat=beat)
    if abs(beat.get("clock_offset", 0)) > tickets.SKEW:
        log.warning("host %s: its clock is %+d s off this replica's, more than the %d s the tickets it checks "
                    "allow: set its clock (NTP)", host.name, beat["clock_offset"], tickets.SKEW)
    return host


async def set_ssh(store: Store, settings: CoordinatorSettings, ref: str, ssh: SshCredentials) -> None:
    secret = seal_ssh(settings, ssh)
    host = await find(store, ref)
    await update(store, host.uuid, lambda h: h.model_copy(update={"ssh_secret": secret}))


async def set_ssh_host_keys(store: Store, ref: str, ssh_host_keys: list[str]) -> Host:
    """Replace the SSH host keys deploys accept from the host (it was reinstalled, or its keys rotated)."""
    host = await find(store, ref)
    return await update(store, host.uuid, lambda h: h.model_copy(update={"ssh_host_keys": ssh_host_keys}))


async def reveal_ssh(store: Store, settings: CoordinatorSettings, ref: str) -> SshCredentials:
    host = await find(store, ref)
    ssh = open_ssh(settings, host)
    if ssh is None:
        raise NotFound(f"host {host.name} has no stored SSH credentials")
    return ssh


async def by_token(store: Store, token: str) -> Host | None:
    """The host whose agent token `token` is (each host is looked at: tokens are stored as hashes)."""
    digest = token_hash(token)
    return next((h for h in await all_hosts(store) if hmac.compare_digest(h.token_sha256, digest)), None)


def renew_at(host: Host, lifetime: float, used: str | None = None) -> float | None:
    """When the host's agent should renew its token: a third of `lifetime` before it expires; now if it
    came with its previous token (`used`: the hash of the one it came with), whose renewal it never got."""
    if used is not None and used != host.token_sha256:
        return time.time()
    return None if host.token_expires is None else host.token_expires - lifetime / 3


def renew_in(at: float | None) -> float | None:
    """Seconds from now until `at` (a `renew_at`), on this replica's clock: what the agent goes by, so that its
    own clock, off the coordinator's, neither lets its token expire unrenewed nor renews it at every connect."""
    return None if at is None else max(at - time.time(), 0.0)


async def renew_token(store: Store, settings: CoordinatorSettings, ref: str, used: str | None = None
                      ) -> tuple[str, float | None]:
    """A new agent token for the host; the token and its expiry. The token the renewal was asked with
    (`used`: its hash; None: the current one) stays valid until it expires, a third of the lifetime at
    most: if the answer is lost the agent has only that one, connects with it and renews again (the
    token it never received is void then); any other token of the host is void at once."""
    host = await find(store, ref)
    token, fields = new_token(settings, host.kind)

    def renewed(h: Host) -> Host:
        kept = {h.token_sha256: h.token_expires, h.previous_token_sha256: h.previous_token_expires}
        asked = used or h.token_sha256
        now = time.time()
        until = min(kept[asked] or math.inf, now + settings.host_token_lifetime / 3) if asked in kept else now
        previous = {"previous_token_sha256": asked, "previous_token_expires": until} if until > now else {}
        return h.model_copy(update={**fields, **previous})
    await update(store, host.uuid, renewed)
    return token, fields["token_expires"]
