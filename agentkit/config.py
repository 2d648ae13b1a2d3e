"""Process configuration: one TOML file per process, every key also settable from the environment.

Each process declares its parameters once as a pydantic model (name, type, default, description);
`load` layers env over file over defaults and names the parameter and source of any bad value.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, BeforeValidator, ValidationError

from agentkit import logs

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    pass


def _split_commas(v: object) -> object:
    return [p for p in v.split(",") if p] if isinstance(v, str) else v


CommaList = Annotated[list[str], BeforeValidator(_split_commas)]  # environment variables carry lists as "a,b"


@runtime_checkable
class Logged(Protocol):
    """Settings of a process that `from_command_line` starts: they name the process's log level."""

    log_level: str


def load(model: type[M], process: str, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> M:
    """Build `model` from `/etc/hoststack/<process>.toml` (or `path`) and `HS_<PROCESS>_<KEY>` vars."""
    env = os.environ if env is None else env
    prefix = f"HS_{process.upper()}_"
    path = Path(path or env.get(f"{prefix}CONFIG", f"/etc/hoststack/{process}.toml"))
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from e
        for k, v in data.items():
            if k not in model.model_fields:
                log.warning("unknown config key %r in %s", k, path)
                continue
            values[k], sources[k] = v, str(path)
    for name in model.model_fields:
        var = prefix + name.upper()
        if var in env:
            raw = env[var]
            try:
                values[name] = json.loads(raw) if raw.lstrip().startswith("{") else raw
            except json.JSONDecodeError as e:
                raise ConfigError(f"config {name} from ${var}: not a JSON object: {e}") from e
            sources[name] = f"${var}"
    try:
        return model.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        raise ConfigError(
            f"config {field}={values.get(field)!r} from {sources.get(field, 'default')}: {err['msg']}"
        ) from e


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
