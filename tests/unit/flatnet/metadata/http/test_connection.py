"""HTTP behaviour and the reply memo of the metadata server's connections, over loopback in this process.

VM NICs get 127.0.0.x addresses and the clients bind them, so identification by source address works
without namespaces. The real-namespace checks are in test_metadata_identity.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time

import pytest

from agentkit.buckets import TokenBuckets
from agentkit.fairness.connections import ConnectionTable
from agentkit.model import L3Spec, NicSpec, Service, VmSpec
from flatnet.metadata.http import connection, imdsv2, site
from flatnet.metadata.http.routes import Router
from flatnet.metadata.http.site import Limits, Site
from flatnet.metadata.http.wire import Rendered
from flatnet.metadata.identity import Identifier
from flatnet.metadata.server import DATA_SERVER_ROUTES, IMDS_ROUTES
from flatnet.metadata.settings import MetadataSettings
from flatnet.metadata.store import Store
from flatnet.metadata.tokens import TokenSigner

L3 = L3Spec(uuid="l3", name="lo", l2_uuid="l2", cidr="127.0.0.0/8", services=[Service.USERDATA])
GET_LISTING = b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n"
GET_ID = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n"
GET_UD = b"GET /latest/user-data HTTP/1.1\r\nHost: x\r\n\r\n"


def vm(n: int, userdata: str | None = None) -> VmSpec:
    nic = NicSpec(uuid=f"nic-{n}", l3_uuid="l3", mac=f"52:54:00:00:00:{n:02x}", ip=f"127.0.0.{n}", default=True)
    return VmSpec(uuid=f"vm-{n}", name=f"vm{n}", nics=[nic], userdata=userdata)


class Lab:
    """Two sites sharing one store and identifier, as a namespace's two addresses do."""

    def __init__(self, l3: L3Spec, *vms: VmSpec, limits: Limits | None = None):
        self.store = Store(MetadataSettings())
        self.vms = {v.uuid: v for v in vms}
        self.l3 = l3
        self.store.update({l3.uuid: l3}, self.vms)
        identifier = Identifier(l3.uuid, "lo", self.store)
        tokens = TokenSigner(60)
        self.limits = limits or Limits(l3.uuid, TokenBuckets(0), ConnectionTable(1000, 64), 65536)
        self.sites = {name: Site(name, Router(routes, imdsv2.check), identifier, self.store, tokens, self.limits)
                      for name, routes in (("imds", IMDS_ROUTES), ("data", DATA_SERVER_ROUTES))}
        self.ports: dict[str, int] = {}
        for name, s in self.sites.items():
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            listener.setblocking(False)
            self.ports[name] = listener.getsockname()[1]
            s.start(listener)

    def update(self, *vms: VmSpec, l3: L3Spec | None = None) -> None:
        self.vms.update({v.uuid: v for v in vms})
        self.l3 = l3 or self.l3
        self.store.update({self.l3.uuid: self.l3}, self.vms)

    async def connect(self, src: str, site_name: str = "imds") -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.ports[site_name], local_addr=(src, 0))
        return Client(reader, writer)

    def close(self) -> None:
        for s in self.sites.values():
            s.close()


class Client:
    """A keep-alive HTTP/1.1 client that sends raw bytes and reads replies one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def ask(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(raw)
        return await self.reply()

    async def reply(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(5):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode().rstrip("\r\n").split("\r\n")
            headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
            length = 0 if head_only else int(headers["content-length"])
            return int(status_line.split()[1]), headers, await self.reader.readexactly(length)

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def lab():
    lab = Lab(L3, vm(11, "#cloud-config\n# eleven\n"), vm(12, "#cloud-config\n# twelve\n"))
    try:
        yield lab
    finally:
        lab.close()


async def test_identical_bytes_from_two_vms_and_two_sites_get_their_own_replies(lab):
    eleven, twelve = await lab.connect("127.0.0.11"), await lab.connect("127.0.0.12")
    for _ in range(3):  # the first answer is rendered and kept, the next ones come from the memo
        assert (await eleven.ask(GET_UD))[2] == b"#cloud-config\n# eleven\n"
        assert (await twelve.ask(GET_UD))[2] == b"#cloud-config\n# twelve\n"
        assert (await eleven.ask(GET_ID))[2] == b"vm-11"
    data = await lab.connect("127.0.0.11", "data")
    for _ in range(2):
        listing = (await data.ask(GET_LISTING))[2].decode().splitlines()
        assert "vm-id" in listing and "mac" not in listing  # CloudStack's flat listing, not EC2's
        assert "mac" in (await eleven.ask(GET_LISTING))[2].decode().splitlines()
    for c in (eleven, twelve, data):
        c.close()


async def test_an_update_is_served_from_the_next_request_on_a_kept_reply(lab):
    client = await lab.connect("127.0.0.11")
    assert (await client.ask(GET_UD))[2] == (await client.ask(GET_UD))[2] == b"#cloud-config\n# eleven\n"
    lab.update(vm(11, "#cloud-config\n# updated\n"))
    assert (await client.ask(GET_UD))[2] == b"#cloud-config\n# updated\n"
    lab.update(vm(11))
    assert (await client.ask(GET_UD))[0] == 404
    client.close()


async def test_refusals_are_never_kept_and_each_is_logged_and_counted(lab, caplog):
    stranger = await lab.connect("127.0.0.99")
    with caplog.at_level(logging.WARNING, logger="flatnet.metadata.identity"):
        for _ in range(2):
            status, _, body = await stranger.ask(GET_UD)
            assert status == 403 and b"cloud-config" not in body
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 2
    eleven = await lab.connect("127.0.0.11")
    assert (await eleven.ask(GET_UD))[0] == (await eleven.ask(GET_UD))[0] == 200  # rendered, then from the memo
    assert (lab.limits.stats["refused"], lab.limits.stats["answered"]) == (2, 2)
    for c in (stranger, eleven):
        c.close()


async def test_a_kept_reply_to_a_token_request_dies_with_the_token(lab):
    client = await lab.connect("127.0.0.11")
    status, headers, token = await client.ask(b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\n"
                                              b"X-aws-ec2-metadata-token-ttl-seconds: 1\r\n\r\n")
    assert status == 200 and headers["x-aws-ec2-metadata-token-ttl-seconds"] == "1"
    with_token = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token: " + token
    for _ in range(2):
        assert (await client.ask(with_token + b"\r\n\r\n"))[:3:2] == (200, b"vm-11")
    await asyncio.sleep(2.05)  # expiry is whole seconds: at most 2 s away
    assert (await client.ask(with_token + b"\r\n\r\n"))[0] == 401
    other = await lab.connect("127.0.0.12")
    assert (await other.ask(with_token + b"\r\n\r\n"))[0] == 401
    client.close()
    other.close()


async def test_required_mode_applies_to_kept_replies(lab):
    client = await lab.connect("127.0.0.11")
    assert (await client.ask(GET_ID))[0] == (await client.ask(GET_ID))[0] == 200
    lab.update(l3=L3.model_copy(update={"imds": "required"}))
    assert (await client.ask(GET_ID))[0] == 401
    client.close()


async def test_pipelined_requests_are_answered_in_order(lab):
    client = await lab.connect("127.0.0.11")
    client.writer.write(GET_ID + GET_UD + GET_ID)
    assert [(await client.reply())[2] for _ in range(3)] == [b"vm-11", b"#cloud-config\n# eleven\n", b"vm-11"]
    client.close()


async def test_http_methods_and_framing(lab):
    client = await lab.connect("127.0.0.11")
    client.writer.write(b"HEAD /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await client.reply(head_only=True)
    assert (status, headers["content-length"]) == (200, "5")
    status, headers, _ = await client.ask(b"POST /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert (status, headers["allow"]) == (405, "GET")
    assert (await client.ask(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 404
    assert (await client.ask(b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: close\r\n\r\n"))[2] == b"vm-11"
    assert await client.closed()
    for bad in (b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", b"NONSENSE\r\n\r\n",
                b"GET /latest/meta-data/ HTTP/1.0\r\n\r\n"):
        client = await lab.connect("127.0.0.11")
        status, headers, _ = await client.ask(bad)
        assert status == (200 if b"HTTP/1.0" in bad else 400) and headers["connection"] == "close"
        assert await client.closed()
    assert lab.limits.stats["malformed"] == 2  # the body and the nonsense; HTTP/1.0 closes after its answer


async def test_large_replies_to_a_client_that_reads_late_arrive_whole_and_in_order(lab):
    big = "#cloud-config\n" + "#" * (8 << 20) + "\n"
    lab.update(vm(11, big))
    client = await lab.connect("127.0.0.11")
    client.writer.write(GET_UD * 3 + GET_ID)
    await asyncio.sleep(0.2)  # the socket buffers fill: the server keeps the rest and stops reading
    assert [(await client.reply())[2] for _ in range(4)] == [big.encode()] * 3 + [b"vm-11"]
    client.close()


async def test_idle_connections_are_closed_and_close_stops_everything(lab, monkeypatch):
    monkeypatch.setattr(site, "IDLE_SWEEP", 0.1)
    quick = Lab(L3, vm(11))
    try:
        idle, busy = await quick.connect("127.0.0.11"), await quick.connect("127.0.0.11")
        for _ in range(6):
            assert (await busy.ask(GET_ID))[0] == 200
            await asyncio.sleep(0.05)
        assert await idle.closed()
        assert quick.sites["imds"].connections == 1
    finally:
        quick.close()
    assert await busy.closed()
    with pytest.raises(OSError):
        await quick.connect("127.0.0.11")


def test_a_full_memo_makes_room_only_from_replies_to_expired_tokens():
    kept: dict[bytes, connection.Kept] = {}
    reply = Rendered(b"head", b"body", False)
    for i in range(connection.MEMO_ENTRIES):
        connection._keep(kept, b"%d" % i, connection.Kept(reply, 0.0 if i == 7 else math.inf))
    connection._keep(kept, b"new", connection.Kept(reply, math.inf))
    assert b"new" in kept and b"7" not in kept
    connection._keep(kept, b"newer", connection.Kept(reply, math.inf))
    assert b"newer" not in kept and len(kept) == connection.MEMO_ENTRIES


async def test_a_partial_request_after_a_remembered_one_is_kept_for_the_rest(lab):
    """Issue 13 finding 6: the memo answered `whole + start of next` as a whole and dropped the start."""
    client = await lab.connect("127.0.0.11")
    client.writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for chunk in (GET_ID, GET_ID + GET_UD[:10], GET_UD[10:], GET_ID + GET_UD[:10], GET_UD[10:]):
        client.writer.write(chunk)
        await asyncio.sleep(0.05)
    replies = [(await client.reply())[::2] for _ in range(5)]
    ud = (200, b"#cloud-config\n# eleven\n")
    assert replies == [(200, b"vm-11"), (200, b"vm-11"), ud, (200, b"vm-11"), ud]
    client.close()


async def test_pipelined_requests_never_read_hold_bounded_output_and_arrive_whole_later():
    big = "#cloud-config\n" + "#" * 16000 + "\n"
    lab = Lab(L3, vm(11, big))
    try:
        client = await lab.connect("127.0.0.11")
        client.writer.write(GET_UD * 2000)  # 32 MB of replies asked for at once
        await asyncio.sleep(0.3)
        (conn,) = lab.sites["imds"]._connections.values()
        assert len(conn._out) < lab.limits.pending_output + len(big) + 512
        for _ in range(2000):
            assert (await client.reply())[2] == big.encode()
        client.close()
    finally:
        lab.close()


async def test_a_source_over_its_rate_waits_and_one_over_its_connections_loses_its_idlest():
    limits = Limits("l3", TokenBuckets(100, burst=5), ConnectionTable(1000, 2), 65536)
    lab = Lab(L3, vm(11), vm(12), limits=limits)
    try:
        client = await lab.connect("127.0.0.11")
        t0 = time.monotonic()
        client.writer.write(GET_ID * 30)
        assert [(await client.reply())[2] for _ in range(30)] == [b"vm-11"] * 30
        assert time.monotonic() - t0 > 0.2 and limits.stats["throttled"] > 0  # 25 beyond the burst at 100/s
        throttled = limits.stats["throttled"]
        other = await lab.connect("127.0.0.12")  # another source is not held back: its request never waits
        assert (await other.ask(GET_ID))[2] == b"vm-12" and limits.stats["throttled"] == throttled
        second, third = await lab.connect("127.0.0.11"), await lab.connect("127.0.0.11", "data")
        assert (await third.ask(GET_ID))[0] == 200
        assert await client.closed()  # the idlest of 127.0.0.11's three went
        assert (await second.ask(GET_ID))[0] == 200 and limits.stats["evicted"] == 1
        for c in (other, second, third):
            c.close()
    finally:
        lab.close()


async def test_a_request_whose_headers_never_end_is_refused_once_over_the_head_limit(lab):
    """The parser kept every header until the request's end: 64 connections of one source sending 126
    headers of 8 KB each held 124 MiB of the agent."""
    header = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    client = await lab.connect("127.0.0.11")
    assert (await client.ask(GET_ID[:-2] + header * 7 + b"\r\n"))[2] == b"vm-11"  # 7 KB of headers: served
    client.writer.write(GET_ID[:-2])
    for _ in range(9):  # never ended
        client.writer.write(header)
        await asyncio.sleep(0.01)
    status, headers, _ = await client.reply()
    assert (status, headers["connection"]) == (431, "close") and await client.closed()
    assert lab.limits.stats["too_large"] == 1


async def test_a_connection_that_sends_bytes_but_no_request_is_closed_as_idle(monkeypatch):
    """Slowloris: a byte now and then of a request that never ends kept the connection from the idle sweep."""
    monkeypatch.setattr(site, "IDLE_SWEEP", 0.1)
    quick = Lab(L3, vm(11))
    try:
        client = await quick.connect("127.0.0.11")
        closed = asyncio.ensure_future(client.closed())
        for byte in GET_ID[:40]:  # 1.2 s of a byte every 30 ms
            if closed.done():
                break
            client.writer.write(bytes([byte]))
            await asyncio.sleep(0.03)
        assert closed.done() and closed.result() and quick.sites["imds"].connections == 0
    finally:
        quick.close()
