"""The words `hs` commands are declared in (`command.py` puts them together): API calls and arguments.

A `Call` is one API request: method, path with `{argument}` placeholders, and how the body and query
are built from the parsed arguments. An `Arg` is an argparse argument; one that refers to an object
names its `Resource` and takes a uuid or a unique name. tests/unit/coordinator/cli/test_routes.py
checks every call against the coordinator's route declarations.
"""

from __future__ import annotations

import argparse
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Const:
    """A body or query value that is always the same."""

    value: object


@dataclass(frozen=True)
class Nested:
    """A JSON object inside a body; with `when`, it is sent only if one of those arguments was given."""

    fields: Mapping[str, Source]
    when: tuple[str, ...] = ()


# Where a body or query value comes from: an argument (by dest), a constant, a nested object, or a
# function of all arguments. A value that comes out None is left out, so the API's default applies.
Source = str | Const | Nested | Callable[[argparse.Namespace], object]


@dataclass(frozen=True)
class Call:
    """One API request. A resource kept in several collections (Ceph backup and primary storage) gives
    one path per collection; the object its first placeholder resolved to chooses among them."""

    method: str
    path: str | tuple[str, ...]
    body: Mapping[str, Source] | None = None
    query: Mapping[str, Source] = field(default_factory=dict)
    once: bool = False  # a create done once per Idempotency-Key: sent with one, it may go to another replica
    idempotent: bool | None = None  # a POST that may be sent twice (None: as its method says)

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,) if isinstance(self.path, str) else self.path


def placeholders(path: str) -> list[str]:
    """The `{name}` placeholders of a path, in order."""
    return [name for _, name, _, _ in string.Formatter().parse(path) if name]


@dataclass(frozen=True, eq=False)
class Resource:
    """Objects the API lists. An argument referring to one takes its uuid or its unique name, resolved
    through the list endpoints (`collections`: list path -> key of the list in the answer; none for objects
    listed inside another's rows, which the command resolving them gathers: a VM's NICs). `also_named` are
    fields that name an object as its `name_field` does (a NIC's `mac` beside its `ip`), and `name_word`
    what errors call such a name."""

    noun: str
    collections: Mapping[str, str]
    name_field: str = "name"
    list_query: Mapping[str, str] = field(default_factory=dict)
    also_named: tuple[str, ...] = ()
    name_word: str = "name"


@dataclass(frozen=True)
class Named:
    """A field of an answer that holds another object's uuid (`vm_uuid`): a table or a `key: value` view also
    shows that object's name, under the field's name without `_uuid` (`vm`), or the uuid where no object
    listed has it (`--json` stays the API's answer). The name is looked up in the rows of `resources`, one
    after the other while a uuid is left unnamed (none is listed for an answer without such a uuid); with
    `within`, among the objects inside each row (a VM's NICs: `spec.nics`), by their field `name`."""

    field: str
    resources: tuple[Resource, ...]
    within: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return self.field.removesuffix("_uuid")


@dataclass(frozen=True)
class Arg:
    """An argparse argument; `ref` makes it a uuid-or-name of that resource, `exclusive` puts it in a
    required group of which exactly one must be given, `alternative` in a group of which at most one may
    be; `env` names the environment variable its default is read from when the command line is parsed."""

    names: tuple[str, ...]
    options: Mapping[str, Any]
    ref: Resource | None = None
    exclusive: str | None = None
    alternative: str | None = None
    env: str | None = None

    @property
    def dest(self) -> str:
        if "dest" in self.options:
            return str(self.options["dest"])
        name = next((n for n in self.names if n.startswith("--")), self.names[0])
        return name.lstrip("-").replace("-", "_")

    @property
    def label(self) -> str:
        """How usage and error messages name the argument: `--l3`, or `VM` for a positional."""
        if self.names[0].startswith("-"):
            return self.names[0]
        return str(self.options.get("metavar") or self.dest.upper())


def arg(*names: str, ref: Resource | None = None, exclusive: str | None = None, alternative: str | None = None,
        env: str | None = None, **options: Any) -> Arg:
    return Arg(names, options, ref, exclusive, alternative, env)


def dig(row: object, path: str) -> object:
    """The value at a dotted path (`spec.nics.0.ip`), None where it leads nowhere."""
    cur = row
    for part in path.split("."):
        if isinstance(cur, list):
            cur = cur[int(part)] if part.isdigit() and int(part) < len(cur) else None
        elif isinstance(cur, dict):
            cur = cur.get(part)
        else:
            return None
    return cur
