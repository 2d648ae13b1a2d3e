"""Where a process's settings come from, before any validation: its TOML file, then `HS_<PROCESS>_<KEY>`
variables over it. `config.load` validates what this gathers against the process's pydantic model;
`build` types the values of a small stdlib dataclass instead, for a command that must start fast
(a scheduled `hs-ctl backup` should not pay for importing pydantic).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

D = TypeVar("D")


class ConfigError(Exception):
    pass


class OutOfRange(ValueError):
    """What a settings dataclass's `__post_init__` raises about one of its fields."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


@dataclass
class Layers:
    """The raw values of the known keys that the file or the environment set, and where each came from."""

    values: dict[str, object]
    sources: dict[str, str]

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")

    def error(self, name: str, message: str, inner: Sequence[str] = ()) -> ConfigError:
        """About `name`, or about the key `inner` leads to inside its section (`vm.cache_mode`)."""
        value = self.values.get(name)
        for key in inner:
            value = value.get(key) if isinstance(value, dict) else None
        return ConfigError(f"config {'.'.join((name, *inner))}={value!r} from {self.source(name)}: {message}")

    def get(self, name: str, kind: Callable[[object], Any], default: Any = None) -> Any:
        """The value of `name` converted by `kind` (one of TYPES), or `default` where nothing set it."""
        if name not in self.values:
            return default
        try:
            return kind(self.values[name])
        except ValueError as e:
            raise self.error(name, str(e)) from None


def gather(names: Collection[str], process: str, path: str | Path | None = None,
           env: Mapping[str, str] | None = None, some: bool = False) -> Layers:
    """The keys `names` from `/etc/hoststack/<process>.toml` (or `path`) and `HS_<PROCESS>_<KEY>` vars;
    other keys in the file are warned about, unless `names` are only `some` of the process's keys."""
    env = os.environ if env is None else env
    prefix = f"HS_{process.upper()}_"
    path = Path(path or env.get(f"{prefix}CONFIG", f"/etc/hoststack/{process}.toml"))
    got = Layers({}, {})
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from e
        for k, v in data.items():
            if k not in names:
                if not some:
                    import logging  # here: hs-ctl backup starts its snapshot before it loads logging

                    logging.getLogger("agentkit.config").warning("unknown config key %r in %s", k, path)
                continue
            got.values[k], got.sources[k] = v, str(path)
    for name in names:
        var = prefix + name.upper()
        if var in env:
            raw = env[var]
            try:
                got.values[name] = json.loads(raw) if raw.lstrip().startswith("{") else raw
            except json.JSONDecodeError as e:
                raise ConfigError(f"config {name} from ${var}: not a JSON object: {e}") from e
            got.sources[name] = f"${var}"
    return got


def as_number(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError("not a number")
    return float(v)


def as_text(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError("not a string")
    return v


def as_path(v: object) -> Path:
    return Path(as_text(v))


TYPES: dict[str, Callable[[object], Any]] = {"float": as_number, "str": as_text, "Path": as_path}


def build(cls: type[D], process: str, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> D:
    """Dataclass `cls` (fields of type float, str or Path) from the file and the environment over its
    defaults; its `__post_init__` checks ranges (raising OutOfRange)."""
    known = {f.name: TYPES[str(f.type)] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    layers = gather(known, process, path, env)
    try:
        return cls(**{name: layers.get(name, known[name]) for name in layers.values})
    except OutOfRange as e:
        raise layers.error(e.name, e.message) from None
