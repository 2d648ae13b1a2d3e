"""Where a process's settings come from, before any validation: its TOML file, the drop-ins beside it
(`<process>.d/*.toml`, in name order, each over the ones before: a site's own settings, which a redeploy
that rewrites the file leaves alone; a section in a drop-in sets its keys, the section's others stay), then
`HS_<PROCESS>_<KEY>` variables over them (a variable replaces its key whole). `config.load` validates what
this gathers against the process's pydantic model; `build` types the fields of a NamedTuple instead, for a
command that must start fast: a scheduled `hs-ctl backup` imports neither pydantic nor dataclasses (whose
import and class building cost it ~12 ms, 6% of a large cloud's backup), so neither does this module.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar


class ConfigError(Exception):
    pass


class OutOfRange(ValueError):
    """What a settings tuple's `check` raises about one of its fields."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


class Layers:
    """The raw values of the known keys that the file or the environment set, and where each came from."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.sources: dict[str, str] = {}  # by key, or by `section.key` where a drop-in set a key inside a section

    def source(self, name: str) -> str:
        """Where `name` (or `section.key`) was set last: its own entry, else its section's."""
        while name not in self.sources and "." in name:
            name = name.rsplit(".", 1)[0]
        return self.sources.get(name, "default")

    def set(self, name: str, value: object, source: str) -> None:
        """`name` replaced whole from `source`."""
        self.values[name] = value
        self._sourced(name, source)

    def overlay(self, data: Mapping[str, object], source: str) -> None:
        """Keys of a later file over the earlier ones': a section merges into the one before, key by key."""
        self.values = self._merged("", self.values, data, source)

    def _merged(self, at: str, old: dict[str, object], new: Mapping[str, object], source: str) -> dict[str, object]:
        out = dict(old)
        for key, value in new.items():
            was = out.get(key)
            if isinstance(was, dict) and isinstance(value, dict):
                out[key] = self._merged(f"{at}{key}.", was, value, source)
            else:
                out[key] = value
                self._sourced(at + key, source)
        return out

    def _sourced(self, name: str, source: str) -> None:
        for stale in [k for k in self.sources if k.startswith(name + ".")]:
            del self.sources[stale]
        self.sources[name] = source

    def error(self, name: str, message: str, inner: Sequence[str] = (), hidden: bool = False) -> ConfigError:
        """About `name`, or about the key `inner` leads to inside its section (`vm.cache_mode`); a secret's value
        (`hidden`) masked as pydantic's SecretStr masks it, so that no log or terminal gets it."""
        value, whole = self.values.get(name), ".".join((name, *inner))
        for key in inner:
            value = value.get(key) if isinstance(value, dict) else None
        shown = "'**********'" if hidden and value is not None else repr(value)  # a missing one shows None
        return ConfigError(f"config {whole}={shown} from {self.source(whole)}: {message}")

    def get(self, name: str, kind: Callable[[object], Any], default: Any = None, hidden: bool = False) -> Any:
        """The value of `name` converted by `kind` (one of TYPES), or `default` where nothing set it."""
        if name not in self.values:
            return default
        try:
            return kind(self.values[name])
        except ValueError as e:
            raise self.error(name, str(e), hidden=hidden) from None


def gather(names: Collection[str], process: str, path: str | Path | None = None,
           env: Mapping[str, str] | None = None, some: bool = False) -> Layers:
    """The keys `names` from `/etc/hoststack/<process>.toml` (or `path`), its drop-ins and `HS_<PROCESS>_<KEY>`
    vars; other keys in the files are warned about, unless `names` are only `some` of the process's keys."""
    env = os.environ if env is None else env
    prefix = f"HS_{process.upper()}_"
    got = Layers()
    for file in files(Path(path or env.get(f"{prefix}CONFIG", f"/etc/hoststack/{process}.toml"))):
        try:
            data = tomllib.loads(file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{file}: {e}") from e
        except OSError as e:
            raise ConfigError(f"{file}: {e.strerror}") from e
        for k in data:
            if k not in names and not some:
                warn_unknown(k, str(file))
        got.overlay({k: v for k, v in data.items() if k in names}, str(file))
    for name in names:
        var = prefix + name.upper()
        if var in env:
            raw = env[var]
            try:
                got.set(name, json.loads(raw) if raw.lstrip().startswith("{") else raw, f"${var}")
            except json.JSONDecodeError as e:
                raise ConfigError(f"config {name} from ${var}: not a JSON object: {e}") from e
    return got


def warn_unknown(key: str, where: str) -> None:
    """A key no setting declares, ignored: a misspelt one is seen in the log."""
    import logging  # here: hs-ctl backup starts its snapshot before it loads logging

    logging.getLogger("agentkit.config").warning("unknown config key %r in %s", key, where)


def files(path: Path) -> list[Path]:
    """`path` if it exists, then the `*.toml` files of the directory `<its stem>.d` beside it, by name."""
    drop_ins = path.with_suffix(".d")
    try:
        names = sorted(n for n in os.listdir(drop_ins) if n.endswith(".toml") and not n.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        names = []
    except OSError as e:  # unreadable: its settings would be silently missing
        raise ConfigError(f"{drop_ins}: {e.strerror}") from e
    return ([path] if path.exists() else []) + [drop_ins / n for n in names]


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


TYPES: dict[str, Callable[[object], Any]] = {"float": as_number, "str": as_text, "Path": as_path,
                                             "Path | None": as_path}  # None: unset, as no file or variable sets it


class Settings(Protocol):
    """A NamedTuple of settings (fields of type float, str, Path or Path | None, all with defaults) that checks
    itself."""

    def check(self) -> None:
        """OutOfRange about a field whose value is not allowed."""


S = TypeVar("S", bound=Settings)


def build(cls: type[S], process: str, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> S:
    """`cls` from the file and the environment over its defaults, checked."""
    return typed(cls, gather(_fields(cls), process, path, env))


def _fields(cls: type[S]) -> dict[str, Callable[[object], Any]]:
    """Each field's name -> what types a raw value of it."""
    # NamedTuple keeps an annotation postponed (`from __future__ import annotations`) as a ForwardRef
    return {name: TYPES[str(getattr(kind, "__forward_arg__", kind))] for name, kind in cls.__annotations__.items()}


def typed(cls: type[S], layers: Layers) -> S:
    """`cls` from the raw values `layers` holds (gathered here, or read elsewhere: another host's files) over its
    defaults, checked; ConfigError names a value by where it came from."""
    known = _fields(cls)
    made = cls(**{name: layers.get(name, known[name]) for name in layers.values if name in known})
    try:
        made.check()
    except OutOfRange as e:
        raise layers.error(e.name, e.message) from None
    return made
