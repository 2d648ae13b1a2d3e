"""The etcd key schema, in one place.

Desired state that agents consume lives under `/hs/d/`: `/hs/d/all/<stream key>` is cluster-wide,
`/hs/d/host/<host>/<stream key>` belongs to one host. A host stream is the union of both, keyed by the
stream key (see agentkit.model.stream_key_*), except that cluster-wide items of one L3 network (its DNS
records, `dns/<l3>/<nic>`) go only to the hosts that have that L3 (`scope`). Everything else is
coordinator bookkeeping.
"""

from __future__ import annotations

from enum import Enum

ROOT = "/hs/"
DESIRED = "/hs/d/"
DESIRED_ALL = "/hs/d/all/"
DESIRED_HOSTS = "/hs/d/host/"


def desired_host(host: str) -> str:
    return f"{DESIRED_HOSTS}{host}/"


def desired_all(stream_key: str) -> str:
    return DESIRED_ALL + stream_key


def desired_for(host: str, stream_key: str) -> str:
    return desired_host(host) + stream_key


class Scope(Enum):
    """Which hosts a desired-state item goes to."""

    ALL = "all"    # every host
    HOST = "host"  # one host (owner: its uuid)
    L3 = "l3"      # the hosts that have one L3 network (owner: its uuid)


_PER_L3_KINDS = ("dns",)  # stream keys `<kind>/<l3>/...` (agentkit.model.stream_key_dns)


def scope(key: str) -> tuple[Scope, str, str] | None:
    """(scope, owner, stream key) of a desired-state etcd key; None for any other key."""
    if key.startswith(DESIRED_ALL):
        sk = key[len(DESIRED_ALL):]
        kind, _, rest = sk.partition("/")
        if kind in _PER_L3_KINDS:
            return Scope.L3, rest.partition("/")[0], sk
        return Scope.ALL, "", sk
    if key.startswith(DESIRED_HOSTS):
        owner, _, sk = key[len(DESIRED_HOSTS):].partition("/")
        return Scope.HOST, owner, sk
    return None


HOSTS = "/hs/host/"
ALIVE = "/hs/alive/"
VM_INDEX = "/hs/vm/"
TAGS = "/hs/tag/"
EIPS = "/hs/eip/"
OBSERVED = "/hs/o/"
OBSERVED_SEQ = "/hs/oseq/"
DEPLOY_LOG = "/hs/deploylog/"
DEPLOY_LOCK = "/hs/deploylock/"
DEPLOY_LOCK_ADDRESS = "/hs/deploylockaddr/"  # a deploy lock's second key: its host's address (deploys.py)
HOST_STATE = "/hs/hoststate/"
PLACED = "/hs/placed/"  # per KVM host: rewritten by each transaction that gives a VM memory there (hostmemory.py)
CONSOLE_TOKENS = "/hs/console/"
LEADER = "/hs/leader"
BACKUP = "/hs/backup"  # the newest backup `hs-ctl backup` took (when, where, its checksum)
SCHEMA = "/hs/schema"  # the data's schema version and the migrations applied to reach it
TIMELINE = "/hs/timeline"  # which restore the data comes from (coordinator/etcd/timeline.py)
REPLICAS = "/hs/replica/"  # each running replica's schema version, bound to a lease (rolling upgrades)


def replica(replica_id: str) -> str:
    return REPLICAS + replica_id


def host(uuid: str) -> str:
    return HOSTS + uuid


def alive(uuid: str) -> str:
    return ALIVE + uuid


def vm_index(uuid: str) -> str:
    return VM_INDEX + uuid


def ipam_prefix(l3: str) -> str:
    return f"/hs/ipam/{l3}/"


def ipam(l3: str, ip: str) -> str:
    return ipam_prefix(l3) + ip


def mac(l2: str, address: str) -> str:
    """A MAC taken on an L2 network (`coordinator/domain/macs.py`)."""
    return f"/hs/mac/{l2}/{address}"


def tag(uuid: str) -> str:
    return TAGS + uuid


def eip(uuid: str) -> str:
    return EIPS + uuid


def placed(host: str) -> str:
    return PLACED + host


def observed(kind: str, ident: str) -> str:
    return f"{OBSERVED}{kind}/{ident}"


def observed_seq(host_uuid: str) -> str:
    return OBSERVED_SEQ + host_uuid


def deploy_log(host_uuid: str) -> str:
    return f"{DEPLOY_LOG}{host_uuid}/"


def deploy_lock(host_uuid: str) -> str:
    return DEPLOY_LOCK + host_uuid


def deploy_lock_address(address: str) -> str:
    """The deploy lock of an address, in its one spelling (agentkit.addr.same_host_key)."""
    return DEPLOY_LOCK_ADDRESS + address


def console_token(digest: str) -> str:
    """A console token by the SHA-256 of its text, held under a lease (domain/consoles.py)."""
    return CONSOLE_TOKENS + digest


def host_state(host_uuid: str) -> str:
    """The last connection state the leader recorded for a host (transitions are logged once)."""
    return HOST_STATE + host_uuid


# Ceph storage, images and volumes (coordinator/domain/ceph/); kind is "bs" (backup) or "ps" (primary)
CEPH = "/hs/ceph/"
IMAGES = "/hs/image/"
VOLUMES = "/hs/volume/"


def ceph_storages(kind: str) -> str:
    return f"{CEPH}{kind}/"


def ceph_storage(kind: str, uuid: str) -> str:
    return ceph_storages(kind) + uuid


def ceph_storage_name(kind: str, name: str) -> str:
    """Name index (value: the uuid); held under a lease while an add is in progress."""
    return f"{CEPH}name/{kind}/{name}"


def image(uuid: str) -> str:
    return IMAGES + uuid


def volume(uuid: str) -> str:
    return VOLUMES + uuid


# File-based primary storage (coordinator/domain/filestorage/): LocalStorage and SharedMountPoint, their
# volumes, and what each capacity scope has reserved (a LocalStorage's is per host, a shared one's "shared")
FILE_STORAGES = "/hs/ps/"
FILE_VOLUMES = "/hs/fvolume/"
RESERVED = "/hs/psreserved/"


def file_storage(uuid: str) -> str:
    return FILE_STORAGES + uuid


def file_volume(uuid: str) -> str:
    return FILE_VOLUMES + uuid


def reserved(storage_uuid: str, scope: str) -> str:
    """Bytes reserved on a storage (scope: a host uuid for LocalStorage, `shared` for SharedMountPoint)."""
    return f"{RESERVED}{storage_uuid}/{scope}"


# Image store backup storage (coordinator/domain/imagestore/) and Ceph's copies of its images
IMAGE_STORES = "/hs/imagestore/"
CEPH_IMAGE_CACHE = "/hs/ceph/imagecache/"


def image_store(uuid: str) -> str:
    return IMAGE_STORES + uuid


def image_store_name(name: str) -> str:
    """Name index of image stores (value: the uuid)."""
    return f"/hs/imagestore-name/{name}"


def ceph_image_cache(ps_uuid: str, image_uuid: str) -> str:
    """A copy of an image store's image in a Ceph primary storage's image-cache pool."""
    return f"{CEPH_IMAGE_CACHE}{ps_uuid}/{image_uuid}"
