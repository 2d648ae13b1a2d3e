"""System tags in the seeds' format (`userdata::…`, `sshkey::…`): parsed, rendered into the VM's
desired object, created, updated, deleted and queried.

A tag lives at `/hs/tag/<vm>/<tag uuid>` and is written in the same transaction as the VM's desired
object it renders into, so an update is streamed to the VM's host at once. User data is capped at
`USERDATA_MAX` (16 KiB, EC2's limit) and a tag at `TAG_MAX`: a VM's desired object travels to its host
in every snapshot of the host's view.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Callable
from typing import Literal, TypeVar

from pydantic import BaseModel

from agentkit import sshkeys
from agentkit.errors import Invalid, NotFound, TooLarge
from agentkit.model import VmSpec
from coordinator.domain import vmrecords
from coordinator.domain.errors import MissingReference
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn

T = TypeVar("T")
ResourceType = Literal["VmInstanceVO"]
USERDATA_MAX = 16 * 1024  # bytes of user data (UTF-8, `\n` unescaped): EC2's limit
TAG_MAX = 65536  # characters of any tag
MAX_TAGS = 32
KINDS = ("userdata", "sshkey")  # the tag types a VM takes (`render`)
MAX_TOTAL = 64 << 10  # bytes of all of a VM's tags: its desired object carries them, within etcd's request limit


class Tag(BaseModel):
    uuid: str
    resource_uuid: str
    resource_type: str
    tag: str


def parse(tag: str, field: str = "tag") -> tuple[str, str]:
    """`userdata::<content>` / `sshkey::<key>` as (type, content) (content minified with literal `\\n`,
    as in the seeds); TooLarge when user data is over USERDATA_MAX bytes (EC2's limit) or the tag over
    TAG_MAX characters."""
    kind, sep, content = tag.partition("::")
    if not sep or not content:
        raise Invalid(f"a system tag has the form <type>::<content>, got {tag[:40]!r}", field=field)
    size = len(content.replace("\\n", "\n").encode()) if kind == "userdata" else 0
    if size > USERDATA_MAX:
        raise TooLarge(f"user data is {size} bytes; at most {USERDATA_MAX} (16 KiB, as EC2)", field=field)
    if len(tag) > TAG_MAX:
        raise TooLarge(f"a system tag holds at most {TAG_MAX} characters, this one {len(tag)}", field=field)
    return kind, content


def check(tag: str, field: str = "tag") -> None:
    """`parse`, and Invalid unless the tag is of a type `render` gives the VM: one it ignores (a misspelt
    `userdat::`) would be stored and do nothing; and unless an `sshkey::` holds one public key, since the
    guest is served it as a line of its authorized keys. Tags are checked where they come in; `render`
    reads the stored ones as they are."""
    kind, content = parse(tag, field)
    if kind not in KINDS:
        raise Invalid(f"unknown system tag type {kind[:40]!r} (known: {', '.join(KINDS)})", field=field)
    if kind == "sshkey":
        try:
            sshkeys.authorized_key(content)
        except ValueError as e:
            raise Invalid(str(e), field=field) from None


def check_set(tags: list[str], field: str) -> None:
    """A VM's tags together: at most MAX_TAGS of them, at most MAX_TOTAL bytes (what its spec carries)."""
    if len(tags) > MAX_TAGS:
        raise TooLarge(f"a VM has at most {MAX_TAGS} system tags", field=field)
    total = sum(len(t.encode()) for t in tags)
    if total > MAX_TOTAL:
        raise TooLarge(f"a VM's system tags take {total} bytes together; the limit is {MAX_TOTAL} bytes",
                       field=field)


def render(spec: VmSpec, tags: list[str]) -> None:
    """Set the VM's userdata (the first `userdata::` tag) and ssh keys (by comment, else `key-<i>`)."""
    spec.userdata = None
    spec.ssh_keys = {}
    for i, tag in enumerate(tags):
        kind, content = parse(tag)
        if kind == "userdata" and spec.userdata is None:
            spec.userdata = content.replace("\\n", "\n")
        elif kind == "sshkey":
            key = content.strip()
            parts = key.split()
            name = parts[2] if len(parts) >= 3 else f"key-{i}"
            spec.ssh_keys[name] = key


def key(resource: str, tag_uuid: str) -> str:
    return f"{keys.TAGS}{resource}/{tag_uuid}"


def new(resource: str, tag: str, resource_type: ResourceType = "VmInstanceVO") -> Tag:
    return Tag(uuid=uuidlib.uuid4().hex, resource_uuid=resource, resource_type=resource_type, tag=tag)


async def of(store: Store, resource: str) -> list[Tag]:
    """A resource's tags, oldest first."""
    entries, _ = await store.list(f"{keys.TAGS}{resource}/")
    return [Tag.model_validate(e.value) for e in sorted(entries, key=lambda e: e.create_revision)]


async def _write(store: Store, resource: str, change: Callable[[dict[str, Tag], Txn], T]) -> T:
    """Apply `change(tags by uuid, txn)` and re-render the VM, all in one transaction."""
    result: list[T] = []

    async def mutate(spec: VmSpec, txn: Txn) -> None:
        tags = {t.uuid: t for t in await of(store, resource)}
        result[:] = [change(tags, txn)]
        render(spec, [t.tag for t in tags.values()])
    await vmrecords.update(store, resource, mutate)
    return result[0]


async def create(store: Store, resource: str, tag: str, resource_type: ResourceType = "VmInstanceVO") -> Tag:
    """CreateSystemTag on a VM."""
    check(tag)

    def change(tags: dict[str, Tag], txn: Txn) -> Tag:
        t = new(resource, tag, resource_type)
        tags[t.uuid] = t
        check_set([t.tag for t in tags.values()], "tag")
        txn.put(key(resource, t.uuid), t.model_dump())
        return t
    try:
        return await _write(store, resource, change)
    except NotFound as e:
        raise MissingReference(str(e), field="resource_uuid") from None


async def find(store: Store, tag_uuid: str) -> Tag:
    entries, _ = await store.list(keys.TAGS)
    for e in entries:
        t = Tag.model_validate(e.value)
        if t.uuid == tag_uuid:
            return t
    raise NotFound(what="system tag", ident=tag_uuid)


async def update(store: Store, tag_uuid: str, tag: str) -> Tag:
    """UpdateSystemTag: new content, served to the VM at once."""
    check(tag)
    old = await find(store, tag_uuid)

    def change(tags: dict[str, Tag], txn: Txn) -> Tag:
        if old.uuid not in tags:
            raise NotFound(what="system tag", ident=old.uuid)
        t = tags[old.uuid].model_copy(update={"tag": tag})
        tags[t.uuid] = t
        check_set([t.tag for t in tags.values()], "tag")
        txn.put(key(t.resource_uuid, t.uuid), t.model_dump())
        return t
    return await _write(store, old.resource_uuid, change)


async def delete(store: Store, tag_uuid: str) -> None:
    """DeleteSystemTag."""
    old = await find(store, tag_uuid)

    def change(tags: dict[str, Tag], txn: Txn) -> None:
        tags.pop(old.uuid, None)
        txn.delete(key(old.resource_uuid, old.uuid))
    await _write(store, old.resource_uuid, change)


def like(pattern: str) -> re.Pattern[str]:
    """An SQL LIKE pattern as a regex: `%` any run, `_` one character; everything else, `[x]` included,
    is itself (the seeds' user data holds `[foo,bar]`)."""
    wild = {"%": ".*", "_": "."}
    return re.compile("".join(wild.get(c) or re.escape(c) for c in pattern) + r"\Z", re.S)


async def query(store: Store, resource: str | None, tag_like: str | None) -> list[Tag]:
    """QuerySystemTag: a resource's tags (or all) whose text matches `tag_like`."""
    entries, _ = await store.list(f"{keys.TAGS}{resource}/" if resource else keys.TAGS)
    rx = like(tag_like) if tag_like else None
    found = [Tag.model_validate(e.value) for e in entries]
    return [t for t in found if rx is None or rx.match(t.tag)]
