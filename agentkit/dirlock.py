"""A directory one process owns: an flock on `<directory>/lock`, held while the process uses the directory.

Two copies of an agent on one host (one run by hand beside its unit, a second unit with another config and
port) would each take the other's state for their own: a kvmagent's journal and identity, an image store's
downloads, a cephagent's imports in progress (which the second removes as leftovers). The lock goes with
its holder however it ends (the kernel drops an flock with the last descriptor), so a crash leaves nothing
to clean; the holder writes its pid in the file, for the next one's message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from agentkit.errors import HostStackError

LOCK = "lock"


class DirectoryUnusable(HostStackError):
    """A process cannot own its directory: another holds it, or it cannot be made or written."""

    code = "directory_unusable"
    msg_fmt = "{directory}: {reason}"


def take(directory: Path, process: str) -> int:
    """The descriptor that holds `directory`'s lock (made, with its parents, if missing); closing it lets the
    lock go. DirectoryUnusable when another process holds it (naming its pid), or when the directory cannot be
    made or written (read-only, full)."""
    lock = directory / LOCK
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise DirectoryUnusable(directory=directory, reason=e.strerror or str(e)) from e
    try:
        _lock(fd, lock, process)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock(fd: int, lock: Path, process: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        pid = f" (pid {holder})" if holder.isdigit() else ""  # none yet: it is between its lock and its write
        raise DirectoryUnusable(directory=lock.parent,
                                reason=f"another {process} process{pid} uses it (it holds {lock})") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as e:
        raise DirectoryUnusable(directory=lock.parent, reason=e.strerror or str(e)) from e


@contextlib.contextmanager
def held(directory: Path, process: str) -> Iterator[None]:
    """`directory` for this process alone while the block runs (see `take`)."""
    fd = take(directory, process)
    try:
        yield
    finally:
        os.close(fd)


def hold(directory: Path, process: str) -> None:
    """`directory` for this process alone until it ends; when it cannot be, the process ends with one line
    naming `process` and why. Taken first in a `main`, before anything touches the directory or the host."""
    try:
        take(directory, process)  # never closed: the kernel lets it go with the process
    except DirectoryUnusable as e:
        sys.exit(f"{process}: {e}")
