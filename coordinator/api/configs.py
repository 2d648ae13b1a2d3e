"""Global configs from the seeds (`UpdateGlobalConfig category=kvm name=vm.cpuMode value=…`).

Values are validated against a declared set and streamed to every host as `config/<category>.<name>`;
per-VM settings override them.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit.model import stream_key_config
from coordinator.api.appkeys import STORE
from coordinator.api.http import ApiError, Routes, not_found
from coordinator.etcd import keys

routes = Routes("global-configs")

# name -> (allowed values, default, description)
DEFINITIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "kvm.vm.cpuMode": (("none", "host-model", "host-passthrough"), "none", "CPU model exposed to guests"),
    "kvm.vm.cacheMode": (("none", "writeback", "writethrough"), "none", "disk cache mode of VM volumes"),
    "kvm.vm.consoleMode": (("vnc", "spice"), "vnc", "graphics console protocol"),
}


class ConfigOut(BaseModel):
    category: str
    name: str
    value: str
    default: str
    allowed: list[str]
    description: str


class ConfigList(BaseModel):
    configs: list[ConfigOut]


class ConfigUpdate(BaseModel):
    value: str = Field(min_length=1, max_length=100)


def _split(full: str) -> tuple[str, str]:
    category, _, name = full.partition(".")
    return category, name


def _out(full: str, value: str | None) -> ConfigOut:
    allowed, default, desc = DEFINITIONS[full]
    category, name = _split(full)
    return ConfigOut(category=category, name=name, value=value or default, default=default,
                     allowed=list(allowed), description=desc)


@routes.route("GET", "/v1/global-configs", response=ConfigList)
async def list_configs(request: web.Request):
    """All global configs with current values, defaults and allowed values."""
    entries, _ = await request.app[STORE].list(keys.desired_all("config/"))
    values = {e.key.rsplit("/", 1)[1]: e.value for e in entries}
    return ConfigList(configs=[_out(k, values.get(k)) for k in DEFINITIONS])


@routes.route("PUT", "/v1/global-configs/{category}/{name}", body=ConfigUpdate, response=ConfigOut)
async def update_config(request: web.Request, body: ConfigUpdate):
    """UpdateGlobalConfig: a validated value, effective on every host (VMs pick it up when redefined)."""
    full = f"{request.match_info['category']}.{request.match_info['name']}"
    if full not in DEFINITIONS:
        raise not_found("global config", full)
    allowed = DEFINITIONS[full][0]
    if body.value not in allowed:
        raise ApiError(400, "invalid", f"{full} must be one of {', '.join(allowed)}; got {body.value!r}", "value")
    await request.app[STORE].put(keys.desired_all(stream_key_config(full)), body.value)
    return _out(full, body.value)
