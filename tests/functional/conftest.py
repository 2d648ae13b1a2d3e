"""Shared fixtures: a tagged test-bed run, a real etcd, coordinator replicas and API clients."""

from __future__ import annotations

import os

import pytest

from agentkit import netns as agentnetns
from coordinator.client import Client
from testbed.coordinators import Coordinator, admin_token
from testbed.etcd import Etcd
from testbed.netns import Run

if os.geteuid() != 0:
    pytest.exit("the test bed needs root (network namespaces)", returncode=2)
agentnetns.install()  # in-process services under test make namespace sockets as the agent does


@pytest.fixture(scope="module")
def run():
    with Run() as r:
        yield r


@pytest.fixture(scope="module")
def etcd(run):
    e = Etcd(run).start()
    yield e
    e.stop()


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
