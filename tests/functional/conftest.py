"""Shared fixtures: a tagged test-bed run, a real etcd, coordinator replicas and API clients, a Ceph cluster."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from agentkit import netns as agentnetns
from agentkit import proc
from coordinator.client import Client
from coordinator.etcd.store import Store
from testbed.coordinators import Coordinator, admin_token
from testbed.etcd import Etcd
from testbed.netns import Run

if os.geteuid() != 0:
    pytest.exit("the test bed needs root (network namespaces)", returncode=2)
agentnetns.install()  # in-process services under test make namespace sockets as the agent does
# A run started in the background (a shell's `&`, as CI may start it) inherits SIGINT ignored, and so would every
# process a test starts: the Ctrl-C a test sends (to `hs vm console --listen`) would never arrive, as it does from
# a terminal. A handled signal is the default again in what the tests exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def run():
    with Run() as r:
        yield r


@pytest.fixture(scope="module")
def etcd(run):
    e = Etcd(run).start()
    yield e
    e.stop()


@pytest.fixture
async def store(etcd):
    """The store driver connected to the module's etcd."""
    s = Store(etcd.endpoint)
    await s.connect()
    yield s
    await s.close()


@pytest.fixture(scope="module")
def token() -> str:
    return admin_token()


@pytest.fixture(scope="module")
def coordinator(run, etcd, token):
    c = Coordinator(run, etcd, token, name="coord-a", heartbeat_timeout=3, leader_ttl=2).start()
    yield c
    c.stop()


@pytest.fixture
async def api(coordinator, token):
    async with Client(coordinator.url, token) as c:
        yield c


# Ceph (cephagent, coordinator and system tests): a real one-node cluster per module, its cephagent
# process, a coordinator that reaches it, and small disk images to import. testbed.ceph is imported
# inside the fixtures: it needs the rados bindings, which the other packages' tests do not.
MiB = 1 << 20
TEST_IMAGE_SIZE = 64 * MiB
TEST_IMAGE_PATTERN = [(0, 3 * MiB, 0xAB), (40 * MiB, 1 * MiB, 0xCD)]  # (offset, length, byte); the rest is zeros


@pytest.fixture(scope="module")
def ceph(run):
    from testbed.ceph import CephCluster

    c = CephCluster(run).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def cephagent_file_roots() -> list[Path]:
    """Directories the cephagent's file:// image URLs may read; a module overrides it to allow some."""
    return []


@pytest.fixture(scope="module")
def cephagent(ceph, cephagent_file_roots):
    from testbed.cephagent import CephAgentProcess

    a = CephAgentProcess(ceph, file_roots=cephagent_file_roots).start()
    yield a
    a.stop()


@pytest.fixture(scope="module")
def ceph_coordinator(run, etcd, token, cephagent):
    """A coordinator whose `cephagent_port`/`cephagent_token` reach `cephagent` (mons on 127.0.0.1)."""
    c = Coordinator(run, etcd, token, name="coord-ceph", cephagent_port=cephagent.port,
                    cephagent_token=cephagent.token).start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """`small.qcow2` (64 MiB virtual, 4 MiB of data: TEST_IMAGE_PATTERN) and its raw twin `small.raw`."""
    d = tmp_path_factory.mktemp("images")
    qcow2 = d / "small.qcow2"
    proc.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), str(TEST_IMAGE_SIZE)])
    writes = [a for off, length, byte in TEST_IMAGE_PATTERN for a in ("-c", f"write -P {byte} {off} {length}")]
    proc.run(["qemu-io", "-f", "qcow2", *writes, str(qcow2)])
    proc.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(qcow2), str(d / "small.raw")])
    return d


@pytest.fixture(scope="session")
def expected() -> Callable[[int, int], bytes]:
    """expected(offset, length): what the test images hold there."""
    def at(offset: int, length: int) -> bytes:
        out = bytearray(length)
        for off, size, byte in TEST_IMAGE_PATTERN:
            lo, hi = max(off, offset), min(off + size, offset + length)
            if lo < hi:
                out[lo - offset:hi - offset] = bytes([byte]) * (hi - lo)
        return bytes(out)
    return at
