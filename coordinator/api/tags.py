"""System tags in the seeds' format (`userdata::…`, `sshkey::…`): create, update, delete, query
(see coordinator/domain/tags.py)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.appkeys import STORE
from coordinator.api.http import Routes
from coordinator.domain import tags
from coordinator.domain.fields import Ref
from coordinator.domain.tags import ResourceType, Tag

routes = Routes("system-tags")


class TagCreate(BaseModel):
    resource_uuid: Ref
    resource_type: ResourceType = "VmInstanceVO"
    tag: str = Field(min_length=3, max_length=tags.TAG_MAX)


class TagUpdate(BaseModel):
    tag: str = Field(min_length=3, max_length=tags.TAG_MAX)


class TagOut(Tag):
    """A system tag."""


class TagList(BaseModel):
    tags: list[TagOut]


class TagQuery(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    resourceUuid: str | None = None  # noqa: N815 - the seeds' query field name
    tag_like: str | None = Field(None, alias="tag~", description="SQL LIKE pattern, e.g. userdata%")


def tag_out(t: Tag) -> TagOut:
    return TagOut.model_validate(t.model_dump())


@routes.route("POST", "/v1/system-tags", body=TagCreate, response=TagOut, status=201)
async def create_tag(request: web.Request, body: TagCreate) -> TagOut:
    """CreateSystemTag: e.g. `userdata::…` or `sshkey::…` on a VM."""
    return tag_out(await tags.create(request.app[STORE], body.resource_uuid, body.tag, body.resource_type))


@routes.route("PUT", "/v1/system-tags/{uuid}", body=TagUpdate, response=TagOut)
async def update_tag(request: web.Request, body: TagUpdate) -> TagOut:
    """UpdateSystemTag: new content, served to the VM at once."""
    return tag_out(await tags.update(request.app[STORE], request.match_info["uuid"], body.tag))


@routes.route("DELETE", "/v1/system-tags/{uuid}", status=204)
async def delete_tag(request: web.Request) -> None:
    """DeleteSystemTag."""
    await tags.delete(request.app[STORE], request.match_info["uuid"])


@routes.route("GET", "/v1/system-tags", query=TagQuery, response=TagList)
async def query_tags(request: web.Request, query: TagQuery) -> TagList:
    """QuerySystemTag with `resourceUuid=` and `tag~=` (LIKE, `%` any run, `_` one character)."""
    found = await tags.query(request.app[STORE], query.resourceUuid, query.tag_like)
    return TagList(tags=[tag_out(t) for t in found])
