"""File paths that come from outside (API requests, the desired state): one syntax, one confinement rule.

A path is printable ASCII of at most PATH_MAX bytes. It is relative (then it lies under a host's
`volume_dir`) or absolute, and it must lie inside one of the directories an operator allows. The
coordinator does not see the hosts' filesystems, so it checks the text (`check`: normalised, no `..`,
inside a root); the agent that opens the file checks the file (`confine`: symlinks resolved, the real
path inside a resolved root), so neither `../../etc/shadow` nor a symlink planted under a root escapes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

from agentkit.errors import Invalid

PATH_MAX = 4096
FilePath = Annotated[str, Field(min_length=1, max_length=PATH_MAX, pattern=r"^[\x20-\x7e]+$",
                                description="absolute and inside an allowed directory, or relative to the "
                                "host's volume_dir; normalised (no '.' or '..' parts)")]


class PathOutside(Invalid):
    """A path that is not normalised or that lies outside every allowed directory."""

    code = "path_outside"


def check(path: str, roots: Sequence[str], field: str | None = None) -> str:
    """`path` if it is normalised and relative (it stays under the host's volume_dir) or absolute and inside
    one of `roots`; the text only, for who cannot see the file."""
    normal = os.path.normpath(path)
    if normal != path or path.startswith("//") or normal == ".." or normal.startswith("../"):
        raise PathOutside(f"{path[:200]!r} is not a normalised path (no '.', '..', '//' or trailing '/')",
                          field=field)
    if os.path.isabs(path) and not any(_inside(path, os.path.normpath(r)) for r in roots):
        raise PathOutside(f"{path[:200]} is outside the allowed directories ({', '.join(roots)})", field=field)
    return path


def confine(path: str, base: str, roots: Sequence[str], what: str = "path") -> str:
    """The real path of `path` (relative: under `base`), symlinks resolved, if it lies inside `base` or
    one of `roots` (resolved too); PathOutside otherwise."""
    real = os.path.realpath(os.path.join(base, path))
    if not any(_inside(real, os.path.realpath(r)) for r in (base, *roots)):
        raise PathOutside(f"{what} {path[:200]} resolves to {real[:200]}, outside {base} and the allowed "
                          f"directories ({', '.join(roots)})")
    return real


def _inside(path: str, root: str) -> bool:
    return path.startswith(root.rstrip("/") + "/")
