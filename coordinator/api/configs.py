"""Global configs from the seeds (`UpdateGlobalConfig category=kvm name=vm.cpuMode value=…`), see
coordinator/domain/configs.py."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from coordinator.api.appkeys import STORE
from coordinator.api.http import Routes
from coordinator.domain import configs
from coordinator.domain.configs import Config

routes = Routes("global-configs")


class ConfigOut(Config):
    """A global config: its value, default and allowed values."""


class ConfigList(BaseModel):
    configs: list[ConfigOut]


class ConfigUpdate(BaseModel):
    value: str = Field(min_length=1, max_length=100)


def config_out(c: Config) -> ConfigOut:
    return ConfigOut.model_validate(c.model_dump())


@routes.route("GET", "/v1/global-configs", response=ConfigList)
async def list_configs(request: web.Request) -> ConfigList:
    """All global configs with current values, defaults and allowed values."""
    return ConfigList(configs=[config_out(c) for c in await configs.all_configs(request.app[STORE])])


@routes.route("PUT", "/v1/global-configs/{category}/{name}", body=ConfigUpdate, response=ConfigOut)
async def update_config(request: web.Request, body: ConfigUpdate) -> ConfigOut:
    """UpdateGlobalConfig: a validated value, effective on every host (VMs pick it up when redefined)."""
    return config_out(await configs.update(request.app[STORE], request.match_info["category"],
                                           request.match_info["name"], body.value))
