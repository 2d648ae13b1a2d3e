"""A wrong, expired or revoked credential ends an open stream within a heartbeat interval (issue 14).

Streams are opened with a host's token as its agent would; then the token is rotated, the host deleted,
or the token left to expire, and the stream must end (the server closes it) within HEARTBEAT. A real
kvmagent given short-lived tokens renews its own and stays Connected.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
import pytest

from agentkit.tls import client_context
from coordinator.client import Client
from testbed.coordinators import Coordinator
from testbed.kvmhost import KvmHost
from testbed.switch import Switch

from .conftest import HEARTBEAT

pytestmark = pytest.mark.real
LIFETIME = 6.0

ADDRESSES = (f"198.18.2.{i}" for i in itertools.count(2))  # a host's own: an address has one KVM host


async def register(api: Client, name: str) -> dict:
    return await api.post("/v1/hosts", {"name": name, "address": next(ADDRESSES)})


class Stream:
    """A host stream held open the way an agent holds it; `ended` is when the server closed it."""

    def __init__(self, coordinator: Coordinator, host: dict, token: str | None = None):
        self.url = f"{coordinator.url}/v1/hosts/{host['uuid']}/stream"
        self.headers = {"Authorization": f"Bearer {token or host['token']}"}
        self.ssl = client_context(coordinator.ca)
        self.lines = 0
        self.ended: float | None = None
        self.opened = asyncio.Event()
        self.task: asyncio.Task[int] | None = None

    async def _read(self) -> int:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl)) as s, s.get(
                self.url, headers=self.headers, timeout=aiohttp.ClientTimeout(total=60)) as r:
            if r.status != 200:
                self.opened.set()
                return r.status
            async for _ in r.content:
                self.lines += 1
                self.opened.set()
            self.ended = time.monotonic()
            return r.status

    async def __aenter__(self) -> Stream:
        self.task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.opened.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()

    async def ends_within(self, seconds: float) -> float:
        """How long after now the server ended the stream (fails if it runs longer than `seconds`)."""
        t0 = time.monotonic()
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), seconds + 1)
        assert self.ended is not None
        took = self.ended - t0
        assert took <= seconds, f"stream ended {took:.2f} s after, not within {seconds}"
        return took


async def test_a_rotated_token_ends_its_open_stream(api, coordinator):
    host = await register(api, "rev-rotate")
    async with Stream(coordinator, host) as stream:
        assert stream.lines >= 1  # the snapshot
        await api.post(f"/v1/hosts/{host['uuid']}/token", {})
        await stream.ends_within(HEARTBEAT)


async def test_a_deleted_hosts_open_stream_ends(api, coordinator):
    host = await register(api, "rev-delete")
    async with Stream(coordinator, host) as stream:
        await api.delete(f"/v1/hosts/{host['uuid']}")
        await stream.ends_within(HEARTBEAT)


async def test_a_wrong_token_opens_no_stream(api, coordinator):
    host = await register(api, "rev-wrong")
    stream = Stream(coordinator, host, token="not-the-token-" + "x" * 30)
    async with stream:
        assert await stream.task == 401 and stream.lines == 0


@pytest.fixture(scope="module")
def expiring(run, etcd, token, pki):
    """A replica that gives agent tokens LIFETIME seconds."""
    c = Coordinator(run, etcd, token, name="coord-expiring", pki=pki, heartbeat_interval=HEARTBEAT,
                    host_token_lifetime=LIFETIME).start()
    yield c
    c.stop()


async def test_an_expired_token_ends_its_open_stream_and_opens_none(expiring):
    async with expiring.client() as api:
        host = await register(api, "rev-expire")
    async with Stream(expiring, host) as stream:
        await asyncio.sleep(LIFETIME - 2)
        assert stream.ended is None
        await stream.ends_within(2 + HEARTBEAT)
    again = Stream(expiring, host)
    async with again:
        assert await again.task == 401


async def test_an_agent_renews_its_token_before_it_expires_and_stays_connected(run, expiring):
    kvm = KvmHost(run, Switch(run), "renewer")
    async with expiring.client() as api:
        await kvm.register(api)
        first = kvm.token
        kvm.start(expiring, start_libvirt=False, resync_interval=5)
        try:
            while (await api.get(f"/v1/hosts/{kvm.uuid}"))["state"] != "Connected":
                await asyncio.sleep(0.2)
            deadline = time.monotonic() + 3 * LIFETIME  # three lifetimes: the first token is long gone
            while time.monotonic() < deadline:
                assert (await api.get(f"/v1/hosts/{kvm.uuid}"))["state"] == "Connected", kvm.log()[-3000:]
                await asyncio.sleep(0.5)
            assert kvm.log().count("agent token renewed") >= 2, kvm.log()[-3000:]
            assert (kvm.state_dir / "host-token.json").exists() and first not in (kvm.state_dir /
                                                                                 "host-token.json").read_text()
            assert (await api.get(f"/v1/hosts/{kvm.uuid}"))["state"] == "Connected"
        finally:
            kvm.close()


async def as_agent(coordinator: Coordinator, host: dict, token: str, path: str) -> tuple[int, dict]:
    """POST one of the host's agent endpoints with `token`, as its agent would: (status, answer)."""
    body = {"hostname": host["name"]} if path == "connect" else None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(coordinator.ca))) as s, \
            s.post(f"{coordinator.url}/v1/hosts/{host['uuid']}/{path}", json=body,
                   headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json()


async def test_an_agent_whose_renewal_answer_was_lost_connects_with_its_old_token_and_renews(expiring):
    async with expiring.client() as api:
        host = await register(api, "rev-lost")
    status, answer = await as_agent(expiring, host, host["token"], "token/renew")
    assert status == 200
    lost = answer["token"]  # committed, but the agent never read it (a 503 after the commit, a timeout)
    status, answer = await as_agent(expiring, host, host["token"], "connect")
    assert status == 200 and answer["token_renew_at"] <= time.time()  # renew now, not in LIFETIME * 2/3
    status, answer = await as_agent(expiring, host, host["token"], "token/renew")
    assert status == 200
    assert (await as_agent(expiring, host, answer["token"], "connect"))[0] == 200
    assert (await as_agent(expiring, host, lost, "connect"))[0] == 401
