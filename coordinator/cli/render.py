"""What `hs` prints: a table for a list, `key: value` lines for one object, or the API's JSON.

One object always prints the same way, whichever command answered with it: `hs vm show`, `hs vm start
--wait` and `hs vm create` show a VM alike. Nested objects print as dotted keys (`spec.nics.0.ip`).
Times (`at`, `…_at`, `last_heartbeat`: unix seconds in the API) print in UTC, to the second, and byte
counts (`size`, `used`, `reserved`, a capacity's `total` and `available`, …) in binary units, as `hs`
takes sizes (`48 MiB`); `--json` gives both as the API does.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import Any

from agentkit import units
from agentkit.terminal import printable
from coordinator.cli.declare import dig


def output(result: object, columns: Sequence[str], as_json: bool) -> str:
    if as_json:
        return json.dumps(result, indent=2)
    if result is None:
        return "ok"
    if isinstance(result, str):  # already lines (deploys print one per host)
        return result
    listed = rows(result)
    if listed is not None:
        return table(listed, columns or (list(listed[0]) if listed else []))
    if isinstance(result, dict):
        return view(result)
    return json.dumps(result, indent=2)


def rows(result: object) -> list[Any] | None:
    """The rows of an answer that is a list (`{"vms": [...]}`); None for anything else."""
    if isinstance(result, dict) and len(result) == 1 and isinstance(listed := next(iter(result.values())), list):
        return listed
    return None


def table(rows: list[object], columns: Sequence[str]) -> str:
    lines = [list(columns)] + [[cell(dig(r, c), c) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def view(obj: dict[str, object]) -> str:
    return "\n".join(f"{key}: {cell(value, key)}" for key, value in _flat(obj, ""))


def _flat(value: object, prefix: str) -> Iterator[tuple[str, object]]:
    """Leaves of nested objects and of lists of objects, with their dotted keys; lists of scalars stay."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _flat(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        for i, v in enumerate(value):
            yield from _flat(v, f"{prefix}.{i}")
    else:
        yield prefix, value


BYTES = frozenset({"size", "virtual_size", "size_bytes", "root_size", "used", "reserved", "bytes", "total",
                   "available", "done"})  # every field of these names in the API counts bytes


def _is_time(key: str) -> bool:
    name = key.rpartition(".")[2]
    return name in ("at", "last_heartbeat") or name.endswith("_at")


def cell(v: object, key: str = "") -> str:
    if v is None or v == [] or v == {}:
        return "-"
    if isinstance(v, int | float) and not isinstance(v, bool) and _is_time(key):
        try:
            return dt.datetime.fromtimestamp(v, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except (ValueError, OverflowError, OSError):  # past any calendar (an agent's clock, or a hostile one)
            return str(v)
    if isinstance(v, int) and not isinstance(v, bool) and key.rpartition(".")[2] in BYTES:
        return units.binary(v)
    if isinstance(v, list):
        return ",".join(cell(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"))
    return printable(str(v))  # what a host or agent said (a deploy log's entry, a VM's error): never to the terminal


