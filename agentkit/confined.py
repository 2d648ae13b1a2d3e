"""Opening a file named by a user only where the operator allowed it, with no window for a symlink swap.

`open_beneath` walks the path from an allowed root one component at a time with `openat(O_NOFOLLOW)`,
so no symlink is followed anywhere below the root and a directory swapped for a symlink between a
check and the open cannot redirect it: the check *is* the open. The caller reads the returned fd.
Roots are resolved once, when the configuration is loaded (a symlink in the root's own path is the
operator's choice). Hard links are not symlinks: keep the roots writable by trusted users only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath


class Refused(Exception):
    """The path is outside the roots, passes through a symlink, or is not a regular file."""


def resolve_roots(roots: Sequence[str | Path]) -> list[Path]:
    return [Path(r).resolve() for r in roots]


def open_beneath(roots: Sequence[Path], path: str) -> int:
    """A read-only fd of the regular file `path` (absolute) below one of `roots`; Refused otherwise."""
    if "\0" in path:  # no file has it in its name; os.open would raise ValueError
        raise Refused("a path cannot hold a NUL byte")
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts:
        raise Refused(f"{path}: an absolute path without '..' is required")
    root = next((r for r in roots if p.is_relative_to(r) and p != PurePosixPath(r)), None)
    if root is None:
        allowed = ", ".join(map(str, roots)) or "none: file:// is disabled"
        raise Refused(f"{path} is outside the directories file:// URLs may read ({allowed})")
    *dirs, name = p.relative_to(root).parts
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for part in dirs:  # each step closes the directory it started from
        fd = _step(fd, part, os.O_RDONLY | os.O_DIRECTORY, path)
    fd = _step(fd, name, os.O_RDONLY | os.O_NONBLOCK, path)  # O_NONBLOCK: a FIFO must not hang us
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused(f"{path} is not a regular file")
    return fd


def _step(dir_fd: int, name: str, flags: int, shown: str) -> int:
    """Open `name` in `dir_fd` without following a symlink; closes `dir_fd` either way."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        raise Refused(f"{shown}: no such file") from None
    except OSError as e:  # ELOOP, ENOTDIR: a symlink (or a file where a directory should be)
        raise Refused(f"{shown}: not a plain path below the allowed directory ({os.strerror(e.errno or 0)}; "
                      "symlinks are not followed)") from None
    finally:
        os.close(dir_fd)
