"""The proxy on loopback: the real app and the agent's real tunnel (kvmagent.consoles) in front of a unix
socket echo "console" (serial through the websocket tunnel, spice through the raw one), with the test
bed's token table as the coordinator; its /metrics as a scraper reads it; and the coordinator resolver
against a stand-in coordinator that answers what the real one does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agentkit import relay as relay_module
from agentkit.consoles import KINDS, ConsoleKind, new_token
from agentkit.errors import Unavailable
from agentkit.metrics import Registry
from agentkit.relay import ENDED, http_close
from agentkit.tls import client_context
from consoleproxy.appkeys import SETTINGS
from consoleproxy.errors import (
    ConsoleUnreachable,
    CoordinatorRefused,
    CoordinatorUnavailable,
    TokenExpired,
    TokenUnknown,
)
from consoleproxy.grants import Grant, admit
from consoleproxy.main import init_app
from consoleproxy.resolver import CoordinatorResolver
from consoleproxy.sessions import PER_TOKEN, Sessions
from consoleproxy.settings import ConsoleProxySettings
from consoleproxy.upstream import open_tunnel
from consoleproxy.web import add_static
from kvmagent import consoles as kvmagent_consoles
from testbed import promtext
from testbed.certs import TestCA
from testbed.consolelab import ConsoleLab, Grants, serve

METRICS_TOKEN = "scraper-token-0123456789"


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data.upper())
    writer.close()


async def screen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A console that always has more to show (screen updates, a guest printing)."""
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(b"x" * 65536)
            await writer.drain()


@pytest.fixture
async def lab(tmp_path: Path):
    server = await asyncio.start_unix_server(echo, str(tmp_path / "serial.sock"))
    lab = await ConsoleLab.start({"serial": tmp_path / "serial.sock", "spice": tmp_path / "serial.sock"},
                                 metrics_token=METRICS_TOKEN)
    yield lab
    await lab.close()
    server.close()


async def test_tls_on_both_hops(tmp_path: Path):
    """As deployed: the browser reaches the proxy over wss, the proxy the tunnel over wss (raw for spice,
    websocket for serial) and verifies the host's certificate with its CA."""
    server = await asyncio.start_unix_server(echo, str(tmp_path / "serial.sock"))
    ca = TestCA(tmp_path / "pki")
    lab = await ConsoleLab.start({"serial": tmp_path / "serial.sock", "spice": tmp_path / "serial.sock"}, ca=ca)
    assert lab.proxy_url.startswith("https://") and lab.grants.tunnel.startswith("wss://")
    async with aiohttp.ClientSession() as s:
        for kind in ("spice", "serial"):
            async with s.ws_connect(lab.url("vm1", kind, lab.grants.issue("vm1", kind)), protocols=("binary",),
                                    ssl=client_context(ca.ca)) as ws:
                await ws.send_bytes(b"x" * 300_000)
                got = b""
                while len(got) < 300_000:
                    msg = await asyncio.wait_for(ws.receive(), 5)
                    assert msg.type is aiohttp.WSMsgType.BINARY, (kind, msg.data, msg.extra)
                    got += msg.data
                assert got == b"X" * 300_000
    await lab.close()
    server.close()


async def until_open(s: aiohttp.ClientSession, lab: ConsoleLab, n: int = 0) -> None:
    """Until the proxy counts `n` open sessions: a closing browser's end takes it a few steps, however slowly
    the machine runs them (a fixed sleep can end first); bounded, so a session left open fails the test."""
    async with asyncio.timeout(5):
        while True:
            async with s.get(f"{lab.proxy_url}/health") as r:
                if (await r.json())["open"] == n:
                    return
            await asyncio.sleep(0.02)


async def test_a_console_session_relays_and_is_counted(lab):
    token = lab.grants.issue("vm1", "serial")
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(lab.url("vm1", "serial", token), protocols=("binary",)) as ws:
            await ws.send_bytes(b"hello")
            assert (await ws.receive()).data == b"HELLO"
            async with s.get(f"{lab.proxy_url}/health") as r:
                assert await r.json() == {"status": "ok", "open": 1, "total": 1}
        await until_open(s, lab)


async def test_refusals_carry_the_status_as_close_code(lab):
    async with aiohttp.ClientSession() as s:
        for token, code in ((None, 4401), ("nope", 4403), (lab.grants.issue("vm2", "serial"), 4403),
                            (lab.grants.issue("vm1", "serial", ttl=-1), 4403)):
            async with s.ws_connect(lab.url("vm1", "serial", token)) as ws:
                assert (await ws.receive()).data == code
        async with s.ws_connect(lab.url("vm1", "vnc", lab.grants.issue("vm1", "vnc"))) as ws:
            msg = await ws.receive()  # the tunnel has no vnc socket for it: 404 there, unreachable here
            assert (msg.data, msg.extra) == (4503, "the vnc console of VM vm1 cannot be reached: the host's agent "
                                                   "answered 404")
        async with s.get(lab.url("vm1", "serial", lab.grants.issue("vm1", "serial")).replace("/ws?", "?")) as r:
            assert r.status == 200 and r.headers["X-Frame-Options"] == "DENY"
        async with s.get(lab.url("vm1", "serial", None)) as r:  # the websocket URL without an upgrade
            assert r.status == 400



async def test_what_cannot_be_a_token_is_refused_without_asking_the_coordinator(lab):
    """A junk token costs no round trip and is told and counted as unknown, as a guessed one is; it reached
    the coordinator, whose 400 (longer than 200) was passed on as its own refusal."""
    asked = lab.grants.asked
    good = new_token()
    junk = ("x" * 8000, "ä" * 43, good[:42], good + "=", good[:42] + "/", good[:42] + ".", f"{good}&x")
    async with aiohttp.ClientSession() as s:
        for token in junk:
            async with s.get(f"{lab.proxy_url}/consoles/vm1/vnc", params={"token": token}) as r:
                assert (r.status, (await r.json())["error"]["code"]) == (403, "token_unknown"), token
        async with s.ws_connect(f"{lab.proxy_url}/consoles/vm1/vnc/ws", params={"token": junk[0]}) as ws:
            assert (await ws.receive()).data == 4403
        assert asked == []
        async with s.get(f"{lab.proxy_url}/consoles/vm1/vnc", params={"token": good}) as r:
            assert r.status == 403 and asked == [good]  # one of ours, unknown: asked
        text = await scrape(s, lab)
    assert promtext.value(text, "hoststack_console_refused_total", kind="vnc", reason="token_unknown") == 9


async def test_a_browser_that_leaves_while_its_console_opens_is_no_error(lab, monkeypatch, caplog):
    """It closed its tab while its token was resolved: the proxy logged a bug's traceback and answered 500 (a
    5xx to alert on in /metrics), whether the console was granted or refused; now that is an ending as any."""
    resolve = lab.grants.resolve

    async def slowly(token: str) -> Grant:
        await asyncio.sleep(0.2)
        return await resolve(token)

    monkeypatch.setattr(lab.grants, "resolve", slowly)
    port = int(lab.proxy_url.rsplit(":", 1)[1])
    for token in (lab.grants.issue("vm1", "spice"), new_token()):  # granted, refused (unknown)
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(f"GET /consoles/vm1/spice/ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset: gone
    requests, route = "hoststack_http_requests_total", "/consoles/{vm}/{kind}/ws"

    def answered(text: str) -> float:  # websocket requests counted, whatever their code
        return sum(n for (name, labels), n in promtext.series(text).items()
                   if name == requests and ("route", route) in labels)

    async with aiohttp.ClientSession() as s:
        text = await scrape(s, lab, lambda t: answered(t) == 2)
    assert promtext.value(text, requests, route=route, method="GET", code="101") == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def give_one_back(s: aiohttp.ClientSession, lab: ConsoleLab, held: list[aiohttp.ClientWebSocketResponse],
                        reopen: Callable[[], Awaitable[aiohttp.ClientWebSocketResponse]]) -> None:
    """Close the last of the `held` sessions; once the proxy counts it gone, one more opens in its place
    (`reopen`), and every one relays, then closes."""
    await held.pop().close()
    await until_open(s, lab, len(held))
    held.append(await reopen())
    for ws in held:
        await ws.send_bytes(b"open")
        assert (await ws.receive()).data == b"OPEN"
        await ws.close()


async def test_a_token_opens_at_most_its_share_of_sessions_at_once(lab):
    """Every session is a connection to the VM's console on its host: one token's are bounded, another
    token's are not counted with them, and a session that ends gives its place back."""
    token, url = lab.grants.issue("vm1", "spice"), lab.url("vm1", "spice", None)
    async with aiohttp.ClientSession() as s:
        held = [await s.ws_connect(f"{url}?token={token}", protocols=("binary",)) for _ in range(PER_TOKEN)]
        async with s.ws_connect(f"{url}?token={token}", protocols=("binary",)) as ws:
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert (msg.data, msg.extra) == (4429, f"this console token has {PER_TOKEN} sessions open, as many as "
                                                   "one may; close one or ask for a new URL")
        async with s.ws_connect(lab.url("vm1", "spice", lab.grants.issue("vm1", "spice")), protocols=("binary",)) as ws:
            await ws.send_bytes(b"another token")
            assert (await ws.receive()).data == b"ANOTHER TOKEN"
        await give_one_back(s, lab, held, lambda: s.ws_connect(f"{url}?token={token}", protocols=("binary",)))
        text = await scrape(s, lab)
    assert promtext.value(text, "hoststack_console_refused_total", kind="spice", reason="too_many_sessions") == 1


async def test_a_vm_has_at_most_its_share_of_sessions_at_once_whatever_their_tokens(tmp_path: Path):
    """Whoever may ask for console URLs had 32 sessions per token and any number of tokens, each session a
    connection to the VM's console at its host; now a VM's are bounded too (3 here), across tokens and kinds.
    Another VM's are not counted with them, and a session gives its place back however it ends (its tunnel
    unreachable, its browser gone)."""
    server = await asyncio.start_unix_server(echo, str(tmp_path / "serial.sock"))
    lab = await ConsoleLab.start({"serial": tmp_path / "serial.sock", "spice": tmp_path / "serial.sock"},
                                 metrics_token=METRICS_TOKEN, vm_sessions=3)
    async with aiohttp.ClientSession() as s:
        async def connect(vm: str, kind: ConsoleKind) -> aiohttp.ClientWebSocketResponse:
            return await s.ws_connect(lab.url(vm, kind, lab.grants.issue(vm, kind)), protocols=("binary",))

        for _ in range(3):  # no vnc socket at the tunnel: unreachable
            assert (await (await connect("vm1", "vnc")).receive()).data == 4503
        held = [await connect("vm1", kind) for kind in ("spice", "spice", "serial")]
        msg = await asyncio.wait_for((await connect("vm1", "spice")).receive(), 5)
        assert (msg.data, msg.extra) == (4429, "VM vm1 has 3 console sessions open through this proxy, as many as "
                                               "one may; close one")
        async with await connect("vm2", "spice") as ws:
            await ws.send_bytes(b"another vm")
            assert (await ws.receive()).data == b"ANOTHER VM"
        await give_one_back(s, lab, held, lambda: connect("vm1", "spice"))
        text = await scrape(s, lab)
    assert promtext.value(text, "hoststack_console_refused_total", kind="spice", reason="too_many_vm_sessions") == 1
    await lab.close()
    server.close()


async def test_a_console_page_keeps_its_token_and_runs_only_the_proxys_scripts(lab):
    """Its URL holds the token: not cached, sent on as no referrer, never framed; it runs no script but the
    proxy's own files (none inline), so nothing a guest shows on it (serial output, a desktop name) can run
    as script on the proxy's origin."""
    async with aiohttp.ClientSession() as s:
        for kind in KINDS:
            async with s.get(lab.url("vm1", kind, lab.grants.issue("vm1", kind), ws=False)) as r:
                assert r.status == 200
                headers, html = r.headers, await r.text()
            assert (headers["Cache-Control"], headers["Referrer-Policy"]) == ("no-store", "no-referrer")
            assert headers["X-Frame-Options"] == "DENY"
            csp = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
            assert (csp["script-src"], csp["frame-ancestors"], csp["object-src"]) == ("'self'", "'none'", "'none'")
            scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
            assert scripts and all(body == "" and re.search(r' src="/', attrs) for attrs, body in scripts), kind
            own = re.search(r' src="(/[a-z-]+\.js)"', "".join(attrs for attrs, _ in scripts))
            assert own is not None
            async with s.get(lab.proxy_url + own.group(1)) as r:  # the page's client, served by the proxy
                assert r.status == 200 and "socketUrl()" in await r.text()


async def until_stalled(s: aiohttp.ClientSession, lab: ConsoleLab, kind: str) -> None:
    """Until the bytes relayed to the `kind` console's browser stay the same for five looks: it takes no more."""
    seen, still = -1.0, 0
    async with asyncio.timeout(10):
        while still < 5:
            now = promtext.value(await scrape(s, lab), "hoststack_console_relayed_bytes_total", kind=kind,
                                 direction="down")
            still, seen = (still + 1, seen) if now == seen else (0, now)
            await asyncio.sleep(0.05)


async def test_a_stopping_proxy_closes_its_consoles_and_waits_for_no_browser_that_reads_nothing(tmp_path, monkeypatch):
    """Open consoles are closed with 1001 when the proxy stops; one whose browser reads nothing never takes
    its close (it waits behind the console's bytes), and the proxy waited for it for ever: its stop hung until
    systemd killed it. Now it is cut off `CLOSE_TIMEOUT` on."""
    monkeypatch.setattr(relay_module, "CLOSE_TIMEOUT", 0.5)
    servers = [await asyncio.start_unix_server(screen, str(tmp_path / "vnc.sock")),
               await asyncio.start_unix_server(echo, str(tmp_path / "serial.sock"))]
    lab = await ConsoleLab.start({"vnc": tmp_path / "vnc.sock", "serial": tmp_path / "serial.sock"},
                                 metrics_token=METRICS_TOKEN)
    async with aiohttp.ClientSession() as s:
        stalled = await s.ws_connect(lab.url("vm1", "vnc", lab.grants.issue("vm1", "vnc")), protocols=("binary",))
        reading = await s.ws_connect(lab.url("vm1", "serial", lab.grants.issue("vm1", "serial")), protocols=("binary",))
        await until_open(s, lab, 2)
        await until_stalled(s, lab, "vnc")
        async with asyncio.timeout(5):
            await lab.close()
        msg = await asyncio.wait_for(reading.receive(), 5)
        assert (msg.data, msg.extra) == (1001, "console proxy stopping")
        await stalled.close()
    for server in servers:
        server.close()


async def test_a_serial_console_is_taken_over_from_a_browser_that_reads_nothing(tmp_path, monkeypatch):
    """The agent waited for the old session to take its 4409, which one that reads nothing never does while the
    guest prints: the new session got 4503 (no tunnel within the proxy's connect_timeout) until the old one's
    idle limit. Now the old one is cut off `TAKEOVER` on and the new one has the console."""
    monkeypatch.setattr(kvmagent_consoles, "TAKEOVER", 0.5)
    monkeypatch.setattr(relay_module, "CLOSE_TIMEOUT", 0.5)  # the old browser's own end at the proxy, after
    server = await asyncio.start_unix_server(screen, str(tmp_path / "serial.sock"))
    lab = await ConsoleLab.start({"serial": tmp_path / "serial.sock"}, metrics_token=METRICS_TOKEN)
    async with aiohttp.ClientSession() as s:
        stalled = await s.ws_connect(lab.url("vm1", "serial", lab.grants.issue("vm1", "serial")), protocols=("binary",))
        await until_stalled(s, lab, "serial")
        async with s.ws_connect(lab.url("vm1", "serial", lab.grants.issue("vm1", "serial")),
                                protocols=("binary",)) as ws:
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type is aiohttp.WSMsgType.BINARY, (msg.data, msg.extra)
        await stalled.close()
    await lab.close()
    server.close()


async def scrape(s: aiohttp.ClientSession, lab: ConsoleLab, until: Callable[[str], bool] = lambda text: True) -> str:
    """The proxy's /metrics once `until` holds of it (a relay counts a few steps after the browser got the
    bytes), or after 5 s as it is then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        async with s.get(f"{lab.proxy_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
        if until(text) or loop.time() > deadline:
            return text
        await asyncio.sleep(0.02)


async def test_metrics_count_refusals_by_reason_sessions_and_bytes(lab):
    """Every refusal a browser meets is a series by kind and reason; a session is counted opened, open, and
    its bytes each way while it runs; every kind and reason is there from the start, at 0."""
    refused, relayed = "hoststack_console_refused_total", "hoststack_console_relayed_bytes_total"
    async with aiohttp.ClientSession() as s:
        text = await scrape(s, lab)
        assert promtext.value(text, refused, kind="vnc", reason="coordinator_refused") == 0
        assert promtext.value(text, "hoststack_console_sessions_open", kind="spice") == 0
        for token in (None, "nope", lab.grants.issue("vm2", "serial"), lab.grants.issue("vm1", "serial", ttl=-1)):
            async with s.ws_connect(lab.url("vm1", "serial", token)) as ws:
                await ws.receive()
        async with s.ws_connect(lab.url("vm1", "vnc", lab.grants.issue("vm1", "vnc"))) as ws:
            await ws.receive()  # no vnc socket at the tunnel: unreachable
        async with s.get(lab.url("vm1", "spice", "nope", ws=False)) as r:  # the page is refused alike
            assert r.status == 403
        async with s.ws_connect(lab.url("vm1", "serial", lab.grants.issue("vm1", "serial")),
                                protocols=("binary",)) as ws:
            await ws.send_bytes(b"hello")
            assert (await ws.receive()).data == b"HELLO"
            text = await scrape(s, lab, lambda t: promtext.value(t, relayed, kind="serial", direction="down") == 5)
            assert promtext.value(text, "hoststack_console_sessions_open", kind="serial") == 1
            assert promtext.value(text, relayed, kind="serial", direction="up") == 5
            assert promtext.value(text, relayed, kind="serial", direction="down") == 5
        await until_open(s, lab)
        text = await scrape(s, lab)
    for kind, reason, n in (("serial", "token_missing", 1), ("serial", "token_unknown", 1),
                            ("serial", "token_mismatch", 1), ("serial", "token_expired", 1),
                            ("vnc", "console_unreachable", 1), ("spice", "token_unknown", 1),
                            ("vnc", "token_unknown", 0)):
        assert promtext.value(text, refused, kind=kind, reason=reason) == n, (kind, reason)
    assert promtext.value(text, "hoststack_console_sessions_opened_total", kind="serial") == 1
    assert promtext.value(text, "hoststack_console_sessions_opened_total", kind="vnc") == 0
    assert promtext.value(text, "hoststack_console_sessions_open", kind="serial") == 0
    assert promtext.value(text, relayed, kind="serial", direction="up") == 5  # the ended session's stay
    assert promtext.value(text, "hoststack_http_requests_total", route="/consoles/{vm}/{kind}/ws", method="GET",
                          code="101") == 6  # every refusal too: upgraded, then closed with its reason


async def test_metrics_take_the_scrapers_token_alone(lab):
    """Without the metrics token (or with none configured) /metrics answers 401, and those refusals are
    counted too; the token opens no console."""
    async with aiohttp.ClientSession() as s:
        for auth in ({}, {"Authorization": "Bearer guessed-token-0123456789"},
                     {"Authorization": f"Bearer {METRICS_TOKEN} x"}, {"Authorization": f"Basic {METRICS_TOKEN}"}):
            async with s.get(f"{lab.proxy_url}/metrics", headers=auth) as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
        async with s.get(lab.url("vm1", "serial", METRICS_TOKEN, ws=False)) as r:
            assert r.status == 403
        text = await scrape(s, lab)
        assert promtext.value(text, "hoststack_http_requests_total", route="/metrics", method="GET", code="401") == 4
        unset, port = await serve(init_app(ConsoleProxySettings(), Grants("ws://127.0.0.1:9")))
        async with s.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as r:
            assert r.status == 401  # none configured: none taken
        await unset.cleanup()


def test_a_refusal_of_another_code_is_shown_too():
    """A resolver may fail otherwise than the reasons known: counted under its code, never dropped."""
    sessions, registry = Sessions(per_vm=64), Registry()
    sessions.register(registry)
    with pytest.raises(Unavailable), sessions.refusals("vnc"):
        raise Unavailable("no answer")
    text = registry.render()
    assert promtext.value(text, "hoststack_console_refused_total", kind="vnc", reason="unavailable") == 1
    assert promtext.value(text, "hoststack_console_refused_total", kind="vnc", reason="token_unknown") == 0


async def test_a_graphical_console_goes_through_a_raw_tunnel(lab):
    """Bytes both ways in order, megabytes at a time; a closing browser closes the console."""
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(lab.url("vm1", "spice", lab.grants.issue("vm1", "spice")), protocols=("binary",),
                                max_msg_size=0) as ws:
            await ws.send_bytes(b"link")
            assert (await ws.receive()).data == b"LINK"
            for _ in range(6):
                await ws.send_bytes(b"x" * (1 << 19))
            got = b""
            while len(got) < 3 << 20:
                msg = await asyncio.wait_for(ws.receive(), 5)
                assert msg.type is aiohttp.WSMsgType.BINARY, (msg.data, msg.extra)
                got += msg.data
            assert got == b"X" * (3 << 20)
        await until_open(s, lab)


async def test_the_raw_tunnel_speaks_bytes_after_its_upgrade_and_not_for_serial(lab):
    for kind, status in (("spice", b"101"), ("serial", b"400")):
        grant = await lab.grants.resolve(lab.grants.issue("vm1", kind))
        host, port = grant.tunnel_url.removeprefix("ws://").split("/")[0].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /v1/consoles/vm1/{kind} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
                     f"Upgrade: hoststack-console\r\nAuthorization: Ticket {grant.ticket}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.split(b" ")[1] == status
        if kind == "spice":
            writer.write(b"raw bytes, no frames")
            assert await reader.readexactly(20) == b"RAW BYTES, NO FRAMES"
            writer.close()
        else:
            assert b"needs the websocket tunnel" in await reader.read(1000)
            writer.close()


async def test_the_agents_end_of_a_raw_tunnel_finds_a_dead_proxy_within_two_heartbeats(lab):
    """A raw tunnel has no websocket heartbeat: TCP's keepalive and user timeout find a peer that went dead
    (its host down, the path cut) at the proxy's end, and now at the agent's too, which held its connection
    to the VM's console for two hours (the system's keepalive) after its proxy's host died."""
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(lab.url("vm1", "spice", lab.grants.issue("vm1", "spice")), protocols=("binary",)) as ws:
            await ws.send_bytes(b"link")
            assert (await ws.receive()).data == b"LINK"
            tunnel = lab.runners[1].server
            assert tunnel is not None and len(tunnel.connections) == 1
            transport = tunnel.connections[0].transport
            assert transport is not None
            agents_end = transport.get_extra_info("socket")
            assert agents_end.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert agents_end.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30  # the heartbeat
            assert agents_end.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
            assert agents_end.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 60_000


@pytest.mark.parametrize(("answer", "why"), [
    (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "the host's agent answered 403"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "the host's agent answered no status"),
    (b"", "tunnel: no HTTP head"),
])
async def test_a_raw_tunnel_that_is_not_granted_is_unreachable(answer, why):
    async def agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        writer.close()

    server = await asyncio.start_server(agent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    grant = Grant("vm1", "vnc", 60, f"ws://127.0.0.1:{port}/v1/consoles/vm1/vnc", "1.ab")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConsoleUnreachable, match=why):
            await open_tunnel(session, grant, ConsoleProxySettings())
    server.close()


async def test_an_agent_from_before_the_raw_tunnel_gets_the_websocket_one():
    async def tunnel(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("binary",))
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(reason="Websocket Upgrade Expected")
        await ws.prepare(request)
        await ws.send_bytes(b"RFB 003.008\n")
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/v1/consoles/{vm}/{kind}", tunnel)
    runner, port = await serve(app)
    grant = Grant("vm1", "vnc", 60, f"ws://127.0.0.1:{port}/v1/consoles/vm1/vnc", "1.ab")
    async with aiohttp.ClientSession() as session:
        pipe = await open_tunnel(session, grant, ConsoleProxySettings())
        assert await pipe.recv() == b"RFB 003.008\n"
        await pipe.close(ENDED)
    await runner.cleanup()

@pytest.fixture
async def coordinator():
    """Answers grants as the coordinator does: one known token, one whose VM was deleted, 404 token_unknown, a
    refusal of the proxy's own credential, or a failure."""
    async def grants(request: web.Request) -> web.Response:
        token = (await request.json())["token"]
        grant = {"vm": "vm1", "kind": "vnc", "ticket": "1.ab", "tunnel_url": "ws://198.18.0.2:8741/v1/consoles/vm1/vnc"}
        if token == "good":
            return web.json_response({**grant, "expires_at": 1e10, "expires_in": 50})
        if token == "behind":  # a coordinator whose clock is an hour behind this machine's: 50 s left
            return web.json_response({**grant, "expires_at": time.time() - 3600 + 50, "expires_in": 50})
        if token == "ahead":  # an hour ahead: 50 s past
            return web.json_response({**grant, "expires_at": time.time() + 3600 - 50, "expires_in": -50})
        if token == "older":  # a coordinator from before expires_in
            return web.json_response({**grant, "expires_at": time.time() + 30})
        if token == "broken":
            return web.json_response({"error": {"code": "unavailable", "message": "etcd down"}}, status=503)
        if token == "deleted-vm":
            return web.json_response({"error": {"code": "console_gone", "message": "the console of this token is "
                                                "gone: VM vm1 does not exist"}}, status=404)
        if token == "proxy-refused":
            return web.json_response({"error": {"code": "unauthorized", "message": "bad token"}}, status=401)
        return web.json_response({"error": {"code": "token_unknown", "message": "unknown"}}, status=404)

    app = web.Application()
    app.router.add_post("/v1/console-proxies/p1/grants", grants)
    runner, port = await serve(app)
    async with aiohttp.ClientSession() as session:
        yield CoordinatorResolver(session, f"http://127.0.0.1:{port}", "p1", timeout=2,
                                  headers=lambda: {"Authorization": "Bearer proxy-token"})
    await runner.cleanup()


async def test_the_coordinator_resolver(coordinator):
    grant = await coordinator.resolve("good")
    assert (grant.vm, grant.kind, grant.ticket, grant.expires_in) == ("vm1", "vnc", "1.ab", 50)
    with pytest.raises(TokenUnknown):
        await coordinator.resolve("other")
    with pytest.raises(CoordinatorUnavailable, match="HTTP 503: etcd down"):
        await coordinator.resolve("broken")
    with pytest.raises(CoordinatorRefused) as e:  # the user is told, not that the coordinator is unavailable
        await coordinator.resolve("deleted-vm")
    assert (e.value.status, e.value.body()) == (404, {"error": {
        "code": "console_gone", "message": "the console of this token is gone: VM vm1 does not exist", "field": None}})
    assert http_close(e.value.status, e.value.message).code == 4404
    with pytest.raises(CoordinatorUnavailable, match="HTTP 401"):  # the proxy's own credential: not the user's
        await coordinator.resolve("proxy-refused")
    coordinator.url = "http://127.0.0.1:9/v1/console-proxies/p1/grants"
    with pytest.raises(CoordinatorUnavailable):
        await coordinator.resolve("good")


async def test_a_tokens_deadline_is_the_coordinators_whatever_this_machines_clock_says(coordinator):
    """An hour behind, the coordinator's deadline lies in this machine's past: still 50 s to connect. An hour
    ahead, its deadline of 50 s ago lies an hour ahead here: expired all the same."""
    admit(await coordinator.resolve("behind"), "vm1", "vnc")
    with pytest.raises(TokenExpired, match="expired 50 s ago"):
        admit(await coordinator.resolve("ahead"), "vm1", "vnc")
    assert 29 < (await coordinator.resolve("older")).expires_in <= 30  # an older coordinator's instant, as before


async def test_the_clients_files_are_served_and_no_symlink_leads_out_of_their_directory(tmp_path: Path):
    """As Debian lays out noVNC: a file, and a link to a file beside it (vnc_auto.html), are served; a link
    planted to lead elsewhere on the host is not."""
    novnc = tmp_path / "novnc"
    (novnc / "core").mkdir(parents=True)
    (novnc / "core" / "rfb.js").write_text("export default class RFB {}")
    (novnc / "vnc.html").write_text("<html>")
    (novnc / "vnc_auto.html").symlink_to("vnc.html")
    (tmp_path / "secret").write_text("host secret")
    (novnc / "escape.js").symlink_to(tmp_path / "secret")
    app = web.Application()
    app[SETTINGS] = ConsoleProxySettings(novnc_dir=str(novnc), termjs_dir=str(tmp_path), spice_html5_dir=str(tmp_path))
    add_static(app)
    runner, port = await serve(app)
    async with aiohttp.ClientSession() as s:
        got = {}
        for path in ("core/rfb.js", "vnc_auto.html", "escape.js"):
            async with s.get(f"http://127.0.0.1:{port}/novnc/{path}") as r:
                got[path] = (r.status, await r.text() if r.status == 200 else "")
    await runner.cleanup()
    assert got == {"core/rfb.js": (200, "export default class RFB {}"), "vnc_auto.html": (200, "<html>"),
                   "escape.js": (404, "")}
