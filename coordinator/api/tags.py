"""System tags in the seeds' format (`userdata::…`, `sshkey::…`): create, update, delete, query.

A tag on a VM is rendered into the VM's desired object in the same transaction, so an update is
streamed to its host at once.
"""

from __future__ import annotations

import fnmatch
import re
import uuid as uuidlib
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from agentkit.model import VmSpec
from coordinator.api.appkeys import STORE
from coordinator.api.http import ApiError, Routes, not_found
from coordinator.domain import vms
from coordinator.etcd import keys
from coordinator.etcd.store import Txn

routes = Routes("system-tags")


class TagCreate(BaseModel):
    resource_uuid: str = Field(min_length=1)
    resource_type: Literal["VmInstanceVO"] = "VmInstanceVO"
    tag: str = Field(min_length=3, max_length=65536)


class TagUpdate(BaseModel):
    tag: str = Field(min_length=3, max_length=65536)


class TagOut(BaseModel):
    uuid: str
    resource_uuid: str
    resource_type: str
    tag: str


class TagList(BaseModel):
    tags: list[TagOut]


class TagQuery(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    resourceUuid: str | None = None  # noqa: N815 - the seeds' query field name
    tag_like: str | None = Field(None, alias="tag~", description="SQL LIKE pattern, e.g. userdata%")


async def _write(store, resource: str, change) -> TagOut:
    """Apply `change(tags: dict uuid->record, txn)` and re-render the VM's userdata/ssh keys."""
    result: dict = {}

    def mutate(spec: VmSpec, txn: Txn) -> None:
        tags = {t["uuid"]: t for t in result["tags"]}
        out = change(tags, txn)
        result["out"] = out
        vms.apply_tags(spec, [t["tag"] for t in tags.values()])

    for _ in range(vms.RETRIES):
        result["tags"] = [e.value for e in await vms.tags_of(store, resource)]
        try:
            await vms.update(store, resource, mutate)
            return result["out"]
        except ApiError as e:
            if e.code != "conflict":
                raise
    raise ApiError(409, "conflict", "tags keep changing concurrently, retry")


@routes.route("POST", "/v1/system-tags", body=TagCreate, response=TagOut, status=201)
async def create_tag(request: web.Request, body: TagCreate):
    """CreateSystemTag: e.g. `userdata::…` or `sshkey::…` on a VM."""
    vms.parse_tag(body.tag)
    store = request.app[STORE]

    def change(tags: dict, txn: Txn) -> TagOut:
        t = TagOut(uuid=uuidlib.uuid4().hex, **body.model_dump())
        tags[t.uuid] = t.model_dump()
        txn.put(vms.tag_key(body.resource_uuid, t.uuid), t.model_dump())
        return t
    try:
        return await _write(store, body.resource_uuid, change)
    except ApiError as e:
        if e.status == 404:
            e.field, e.status = "resource_uuid", 400
        raise


async def _find(store, tag_uuid: str) -> dict:
    entries, _ = await store.list(keys.TAGS)
    for e in entries:
        if e.value["uuid"] == tag_uuid:
            return e.value
    raise not_found("system tag", tag_uuid)


@routes.route("PUT", "/v1/system-tags/{uuid}", body=TagUpdate, response=TagOut)
async def update_tag(request: web.Request, body: TagUpdate):
    """UpdateSystemTag: new content, served to the VM at once."""
    vms.parse_tag(body.tag)
    store = request.app[STORE]
    old = await _find(store, request.match_info["uuid"])

    def change(tags: dict, txn: Txn) -> TagOut:
        if old["uuid"] not in tags:
            raise not_found("system tag", old["uuid"])
        t = TagOut.model_validate({**tags[old["uuid"]], "tag": body.tag})
        tags[t.uuid] = t.model_dump()
        txn.put(vms.tag_key(t.resource_uuid, t.uuid), t.model_dump())
        return t
    return await _write(store, old["resource_uuid"], change)


@routes.route("DELETE", "/v1/system-tags/{uuid}", status=204)
async def delete_tag(request: web.Request):
    """DeleteSystemTag."""
    store = request.app[STORE]
    old = await _find(store, request.match_info["uuid"])

    def change(tags: dict, txn: Txn) -> None:
        tags.pop(old["uuid"], None)
        txn.delete(vms.tag_key(old["resource_uuid"], old["uuid"]))
    await _write(store, old["resource_uuid"], change)
    return web.Response(status=204)


@routes.route("GET", "/v1/system-tags", query=TagQuery, response=TagList)
async def query_tags(request: web.Request, query: TagQuery):
    """QuerySystemTag with `resourceUuid=` and `tag~=` (LIKE, `%` any run, `_` one character)."""
    store = request.app[STORE]
    prefix = f"{keys.TAGS}{query.resourceUuid}/" if query.resourceUuid else keys.TAGS
    entries, _ = await store.list(prefix)
    pattern = None
    if query.tag_like:
        pattern = fnmatch.translate(query.tag_like.replace("*", "[*]").replace("?", "[?]")
                                    .replace("%", "*").replace("_", "?"))
    rx = re.compile(pattern, re.S) if pattern else None
    tags = [TagOut.model_validate(e.value) for e in entries if not rx or rx.match(e.value["tag"])]
    return TagList(tags=tags)
