"""Security tests: every hop over TLS: etcd with client certificates and user/password auth, a coordinator
with the run's CA (testbed.pki), and its clients."""

from __future__ import annotations

import pytest

from testbed.coordinators import Coordinator
from testbed.etcd import EtcdCluster
from testbed.pki import TestPki

HEARTBEAT = 1.0  # the agents' heartbeat interval here: credentials must end streams within it


@pytest.fixture(scope="module")
def etcd(run):
    e = EtcdCluster(run, size=1, tls=True, auth=True).start()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def pki(run):
    return TestPki(run)


@pytest.fixture(scope="module")
def coordinator(run, etcd, token, pki):
    c = Coordinator(run, etcd, token, name="coord-tls", pki=pki, heartbeat_interval=HEARTBEAT,
                    heartbeat_timeout=3, leader_ttl=2, reader_token="reader-token-0123456789",
                    metrics_token="metrics-token-0123456789").start()
    yield c
    c.stop()


@pytest.fixture
async def api(coordinator):
    async with coordinator.client() as c:
        yield c
