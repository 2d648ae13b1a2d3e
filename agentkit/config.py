"""Process configuration: one TOML file per process, every key also settable from the environment.

Each process declares its parameters once as a pydantic model (name, type, default, description);
`load` layers env over file over defaults and names the parameter and source of any bad value.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Protocol, TypeVar, get_args, get_origin, runtime_checkable

from pydantic import BaseModel, BeforeValidator, Secret, SecretStr, ValidationError

from agentkit import logs
from agentkit.configfile import ConfigError as ConfigError  # re-exported: every process catches it here
from agentkit.configfile import gather, warn_unknown

M = TypeVar("M", bound=BaseModel)


def _split_commas(v: object) -> object:
    return [p for p in v.split(",") if p] if isinstance(v, str) else v


CommaList = Annotated[list[str], BeforeValidator(_split_commas)]  # environment variables carry lists as "a,b"


def revealed(secret: SecretStr | Secret[str] | None) -> str | None:
    """An optional secret setting's text, where it is used: until then it stays out of reprs and errors."""
    return None if secret is None else secret.get_secret_value()


@runtime_checkable
class Logged(Protocol):
    """Settings of a process that `from_command_line` starts: they name the process's log level."""

    log_level: str


def load(model: type[M], process: str, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> M:
    """Build `model` from `/etc/hoststack/<process>.toml` (or `path`) and `HS_<PROCESS>_<KEY>` vars."""
    layers = gather(model.model_fields, process, path, env)
    for name in layers.values:
        for key in unknown_keys(model.model_fields[name].annotation, layers.values[name]):
            warn_unknown(f"{name}.{key}", layers.source(f"{name}.{key}"))
    try:
        return model.model_validate(layers.values)
    except ValidationError as e:
        err = e.errors()[0]
        name, *inner = [str(k) for k in err["loc"]] or ["?"]
        raise layers.error(name, err["msg"], inner, hidden=_secret(model, name)) from e


def _secret(model: type[BaseModel], name: str) -> bool:
    """Whether the setting `name` holds a secret (SecretStr, Secret[...]), whose value no error shows."""
    field = model.model_fields.get(name)
    kind = field.annotation if field else None
    return any(k is SecretStr or get_origin(k) is Secret for k in (kind, *get_args(kind)))


def unknown_keys(section: object, values: object) -> Iterator[str]:
    """Keys in a section (`[vm]`) and the sections inside it that its model does not declare: warned about
    and ignored, as unknown keys at the top are (a key a newer or older release knows must not stop a
    start), so that a misspelt one is seen. A model that forbids them (`[tls]`) refuses them instead."""
    if not (isinstance(section, type) and issubclass(section, BaseModel) and isinstance(values, dict)) or \
            section.model_config.get("extra") == "forbid":
        return
    for key, value in values.items():
        if key not in section.model_fields:
            yield key
        else:
            yield from (f"{key}.{inner}" for inner in unknown_keys(section.model_fields[key].annotation, value))


def from_command_line(model: type[M], process: str, description: str, argv: list[str] | None = None) -> M:
    """The process entry points' shared start: `--config FILE`, load, exit with one line on bad config,
    then structured logging at the configured level (the model must have `log_level`)."""
    parser = argparse.ArgumentParser(prog=process, description=description)
    parser.add_argument("--config", help=f"TOML file (default /etc/hoststack/{process}.toml)")
    args = parser.parse_args(argv)
    try:
        settings = load(model, process, args.config)
    except ConfigError as e:
        sys.exit(f"{process}: {e}")
    if not isinstance(settings, Logged):
        raise TypeError(f"{model.__name__} has no log_level")  # a bug in the process's settings model
    logs.setup(settings.log_level)
    return settings
