"""Image imports (no Ceph needed): what an interrupted import left goes at the next start; a cancelled one
ends with its worker thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cephagent.images import joined, remove_leftovers
from cephagent.workers import Workers


def test_the_temp_files_of_interrupted_imports_are_removed_and_nothing_else(tmp_path):
    for leftover in ("import-a1b2/download", "import-c3d4/converted.raw"):
        (tmp_path / leftover).parent.mkdir()
        (tmp_path / leftover).write_bytes(b"\1" * 4096)
    (tmp_path / "operator-notes").write_text("kept")
    remove_leftovers(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["operator-notes"]


def test_what_no_import_made_is_left_alone_and_the_agent_starts(tmp_path):
    """A tmp_dir others can write (an operator's /tmp): a symlink or a file named import-* ended every start with
    rmtree's error, for systemd to restart the agent into the same error."""
    (tmp_path / "import-link").symlink_to(tmp_path / "kept")
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "data").write_text("kept")
    (tmp_path / "import-file").write_text("kept")
    remove_leftovers(tmp_path)
    assert (tmp_path / "kept" / "data").read_text() == (tmp_path / "import-file").read_text() == "kept"
    assert (tmp_path / "import-link").is_symlink()


def test_a_first_start_finds_no_tmp_dir_yet(tmp_path):
    remove_leftovers(tmp_path / "tmp")
    assert not (tmp_path / "tmp").exists()


async def test_a_cancelled_import_ends_only_after_its_worker_thread():
    """A DELETE cancels the image's import and removes the image next: the import's thread (creating,
    writing or holding the image open) must be done by then, told to stop by the event it polls."""
    stop, left = threading.Event(), []

    def write_until_stopped() -> None:
        while not stop.wait(0.01):
            pass
        time.sleep(0.1)  # closing the image
        left.append("closed")

    work = asyncio.ensure_future(joined(Workers(1, 1), stop, write_until_stopped))
    await asyncio.sleep(0.05)
    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await work
    assert left == ["closed"]
