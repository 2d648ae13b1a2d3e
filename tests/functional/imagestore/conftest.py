"""Fixtures of the image store tests: a web server (lighttpd) in one namespace serving image files,
the real `imagestore` agent in another, a veth between them; clients reach the agent inside its
namespace, as the coordinator (token) or as a host (read ticket).

Files served (`files`): small.qcow2 (64 MiB virtual, 4 MiB of data) and its raw twin, big.raw (24 MiB
of pseudo-random data, for interrupted downloads), an ISO, a qcow2 with a backing file, one with an
external data file, a vmdk. `allowed/` is the agent's only file:// root.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentkit import proc
from imagestore.client import ImageStoreClient
from testbed.imagelab import ImageLab
from testbed.imagestore import ImageStoreProcess, ns_session

MiB = 1 << 20
BIG = 24 * MiB


class Lab(ImageLab):
    def sha256(self, name: str) -> str:
        return hashlib.sha256((self.files / name).read_bytes()).hexdigest()

    def md5(self, name: str) -> str:
        return hashlib.md5((self.files / name).read_bytes(), usedforsecurity=False).hexdigest()


def make_files(d: Path, image_dir: Path) -> None:
    for name in ("small.qcow2", "small.raw"):
        proc.run(["cp", "--sparse=always", str(image_dir / name), str(d / name)])
    rnd = random.Random(16)
    (d / "big.raw").write_bytes(rnd.randbytes(BIG))
    (d / "other.raw").write_bytes(rnd.randbytes(BIG))
    iso_tree = d / "iso-tree"
    iso_tree.mkdir()
    (iso_tree / "README").write_text("installer\n")
    proc.run(["genisoimage", "-quiet", "-o", str(d / "installer.iso"), "-V", "HSTEST", "-J", "-R", str(iso_tree)])
    proc.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(d / "small.qcow2"),
              str(d / "overlay.qcow2")])
    proc.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={d / 'ext.data'}",
              str(d / "datafile.qcow2"), "16M"])
    proc.run(["qemu-img", "create", "-q", "-f", "vmdk", str(d / "disk.vmdk"), "16M"])
    (d / "allowed" / "sub").mkdir(parents=True)
    proc.run(["cp", str(d / "small.qcow2"), str(d / "allowed" / "sub" / "small.qcow2")])
    os.symlink(d / "small.raw", d / "allowed" / "link.raw")  # a symlink inside the root: refused
    os.symlink(d, d / "allowed" / "up")  # a directory symlink leading out of the root: refused


@pytest.fixture(scope="module")
def lab(run, image_dir) -> Iterator[Lab]:
    files = run.path("files")
    files.mkdir()
    make_files(files, image_dir)
    lab = Lab(run, files, tcp_buffer=256 << 10, checkpoint_bytes=MiB, metrics_token="scraper-" + "s" * 16).start()
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def store(lab) -> ImageStoreProcess:
    return lab.store


@pytest.fixture
async def client(lab, store) -> AsyncIterator[ImageStoreClient]:
    async with ns_session(lab.store_ns.name) as session:
        yield store.client(session)
