"""Browser-side websocket → console proxy → agent tunnel → the consoles of a real qemu running the tiny guest.

What is asserted is what a user sees: the guest's shell answering on the serial console, the guest's
screen through VNC equal to qemu's own screendump, a SPICE server's link reply, and refusals that say why.
"""

from __future__ import annotations

import asyncio
import struct

import aiohttp
import pytest
from PIL import Image

from testbed.consolelab import ConsoleLab
from testbed.rfb import RfbClient, WsSource

pytestmark = [pytest.mark.real, pytest.mark.timeout(120)]


async def read_until(ws: aiohttp.ClientWebSocketResponse, marker: bytes, timeout: float = 20) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.BINARY, f"console ended: {msg}; so far {seen[-500:]!r}"
            seen += msg.data
    return seen


async def closed_with(url: str) -> tuple[int, str]:
    """Connect, expect the proxy to close at once: its close code and reason."""
    async with aiohttp.ClientSession() as s, s.ws_connect(url, protocols=("binary",)) as ws:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        return msg.data, msg.extra


async def test_serial_console_runs_a_command_in_the_guest(vm, lab):
    token = lab.grants.issue(vm.uuid, "serial")
    async with aiohttp.ClientSession() as s, s.ws_connect(lab.url(vm.uuid, "serial", token),
                                                         protocols=("binary",)) as ws:
        assert ws.protocol == "binary"
        await ws.send_bytes(b"echo HS-ECHO-$((6*7))\r")
        await read_until(ws, b"HS-ECHO-42")  # the shell computed it: not our own echo
    # the log libvirt's <log file=…> keeps works alongside; qemu writes it after the socket, so not at once
    await asyncio.to_thread(vm.wait_serial, "HS-ECHO-42", 10)


async def test_vnc_shows_the_guests_screen_pixel_for_pixel(vm, lab, run):
    token = lab.grants.issue(vm.uuid, "vnc")
    async with aiohttp.ClientSession() as s, s.ws_connect(lab.url(vm.uuid, "vnc", token),
                                                         protocols=("binary",)) as ws:
        client = RfbClient(WsSource(ws))
        screen = await client.handshake()
        await client.refresh()
    dump = Image.open(vm.screendump(run.path("vnc-screendump.ppm"))).convert("RGB")
    assert (screen.width, screen.height) == dump.size
    assert screen.rgb() == dump.tobytes()
    lit = sum(1 for v in screen.pixels[::3] if v > 64)
    assert lit > 2000, "the screen is blank: the guest's banner and shell prompt should be on it"


async def test_spice_server_answers_the_link_handshake(vm, lab):
    token = lab.grants.issue(vm.uuid, "spice")
    link = struct.pack("<IBBIII", 0, 1, 0, 0, 0, 18)  # SpiceLinkMess: main channel, no caps
    async with aiohttp.ClientSession() as s, s.ws_connect(lab.url(vm.uuid, "spice", token),
                                                         protocols=("binary",)) as ws:
        await ws.send_bytes(b"REDQ" + struct.pack("<III", 2, 2, len(link)) + link)
        reply = await WsSource(ws).readexactly(20)
    magic, major, _, _, error = struct.unpack("<4sIIII", reply)
    assert (magic, major, error) == (b"REDQ", 2, 0)


async def test_refused_tokens_close_with_a_reason(vm, lab):
    assert await closed_with(lab.url(vm.uuid, "serial", None)) == (4401, "a console token is required (?token=...)")
    assert await closed_with(lab.url(vm.uuid, "serial", "no-such-token")) == (4403, "unknown console token")
    code, reason = await closed_with(lab.url(vm.uuid, "vnc", lab.grants.issue(vm.uuid, "vnc", ttl=-5)))
    assert code == 4403 and reason.startswith("console token expired")
    code, reason = await closed_with(lab.url(vm.uuid, "vnc", lab.grants.issue("another-vm", "vnc")))
    assert code == 4403 and "of VM another-vm" in reason
    code, reason = await closed_with(lab.url(vm.uuid, "vnc", lab.grants.issue(vm.uuid, "serial")))
    assert code == 4403 and "opens the serial console" in reason


async def test_pages_are_served_only_for_a_valid_token(vm, lab):
    async with aiohttp.ClientSession() as s:
        async with s.get(lab.url(vm.uuid, "vnc", "no-such-token", ws=False)) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "token_unknown"
        async with s.get(lab.url(vm.uuid, "vnc", lab.grants.issue(vm.uuid, "vnc"), ws=False)) as r:
            assert r.status == 200 and '<script type="module" src="/vnc.js">' in await r.text()
            assert r.headers["Cache-Control"] == "no-store"
        async with s.get(f"{lab.proxy_url}/vnc.js") as r:  # the page's client: noVNC on its websocket
            assert r.status == 200 and 'import RFB from "/novnc/core/rfb.js"' in await r.text()
        async with s.get(lab.url(vm.uuid, "serial", lab.grants.issue(vm.uuid, "serial"), ws=False)) as r:
            assert r.status == 200 and "/termjs/term.js" in await r.text()
        async with s.get(f"{lab.proxy_url}/novnc/core/rfb.js") as r:
            assert r.status == 200 and "export default class RFB" in await r.text()


async def test_the_tunnel_wants_a_ticket_for_that_vm_and_kind(vm, lab):
    grant_url = (await lab.grants.resolve(lab.grants.issue(vm.uuid, "serial"))).tunnel_url.replace("ws://", "http://")
    other = await lab.grants.resolve(lab.grants.issue("another-vm", "serial"))  # as the coordinator answers the proxy
    async with aiohttp.ClientSession() as s:
        async with s.get(grant_url) as r:
            assert r.status == 401
        async with s.get(grant_url, headers={"Authorization": f"Ticket {other.ticket}"}) as r:
            assert r.status == 403 and "not issued for the serial console" in (await r.json())["error"]["message"]


async def test_unreachable_console_and_idle_limit(vm):
    lab = await ConsoleLab.start({"serial": vm.socket("serial")}, idle_timeout=1)
    try:
        code, reason = await closed_with(lab.url(vm.uuid, "vnc", lab.grants.issue(vm.uuid, "vnc")))
        assert code == 4503 and "answered 404" in reason  # this host has no such console
        async with aiohttp.ClientSession() as s, s.ws_connect(lab.url(vm.uuid, "serial", lab.grants.issue(
                vm.uuid, "serial")), protocols=("binary",)) as ws:
            async with asyncio.timeout(5):
                while (msg := await ws.receive()).type is aiohttp.WSMsgType.BINARY:
                    pass
        assert (msg.data, msg.extra) == (4408, "idle: no data for 1 s")
    finally:
        await lab.close()


async def test_a_new_serial_session_takes_over(vm, lab):
    async with aiohttp.ClientSession() as s:
        first = await s.ws_connect(lab.url(vm.uuid, "serial", lab.grants.issue(vm.uuid, "serial")))
        second = await s.ws_connect(lab.url(vm.uuid, "serial", lab.grants.issue(vm.uuid, "serial")))
        async with asyncio.timeout(10):
            while (msg := await first.receive()).type is aiohttp.WSMsgType.BINARY:
                pass
        assert msg.data == 4409
        await second.send_bytes(b"echo HS-SECOND-$((2*21))\r")
        await read_until(second, b"HS-SECOND-42")
        await second.close()
