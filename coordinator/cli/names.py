"""uuid-or-name arguments: an exact uuid first, then an exact name; an unknown or ambiguous name is an
error of one line (the ambiguous one lists the matches, so the user can pick a uuid)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coordinator.cli.declare import Resource, dig
from coordinator.cli.errors import CliError


class Found(str):
    """A resolved reference: the object's uuid (so it goes into paths and bodies as is) that remembers
    the row it was listed as and the collection it was listed in."""

    row: dict[str, Any]
    collection: str

    def __new__(cls, row: dict[str, Any], collection: str) -> Found:
        found = super().__new__(cls, row["uuid"])
        found.row, found.collection = row, collection
        return found


def pick(resource: Resource, rows: Sequence[Found], ref: str, where: str) -> Found:
    """The object `ref` (a uuid or a name) refers to among `rows`; `where` names the argument in errors."""
    for row in rows:
        if row == ref:
            return row
    fields = (resource.name_field, *resource.also_named)
    named = [row for row in rows if any(dig(row.row, f) == ref for f in fields)]
    if len(named) == 1:
        return named[0]
    if not named:
        raise CliError(f"{resource.noun} {ref} does not exist ({where})")
    matches = ", ".join(f"{row} {ref}" for row in named)
    raise CliError(f"{resource.noun} {resource.name_word} {ref} is ambiguous: {matches}; give a uuid ({where})")
