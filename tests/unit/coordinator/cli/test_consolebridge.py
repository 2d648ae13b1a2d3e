"""`hs vm console VM --listen [ADDR:]PORT` in this process: a stand-in coordinator that hands out URLs of the
real console proxy and agent tunnel (testbed.consolelab), in front of a unix socket "console" that greets
as a VNC server and answers in capitals; clients are plain TCP connections to the bridge's port.

tests/functional/consoleproxy/test_console_e2e.py connects real VNC and SPICE clients to a real VM through it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from coordinator.cli import config, consolebridge, parser
from coordinator.cli.commands import GROUPS
from coordinator.cli.errors import CliError
from coordinator.cli.main import run
from testbed.certs import TestCA
from testbed.consolelab import ConsoleLab, serve

VM = "6f1c0000000000000000000000000001"
TOKEN = "admin"
GREETING = b"RFB 003.008\n"


def listen(*argv: str) -> argparse.Namespace:
    return parser.build(GROUPS).parse_args(["vm", "console", "tiny", *argv])


@pytest.mark.parametrize(("given", "bound"), [
    ("5931", ("127.0.0.1", 5931)), ("0", ("127.0.0.1", 0)), ("0.0.0.0:5931", ("0.0.0.0", 5931)),
    ("198.18.0.7:65535", ("198.18.0.7", 65535)), ("[::1]:5931", ("::1", 5931)), ("[::]:0", ("::", 0))])
def test_listen_takes_a_port_and_an_address_that_defaults_to_loopback(given, bound):
    assert listen("--listen", given).listen == bound


@pytest.mark.parametrize("given", ["", ":5931", "65536", "-1", "+5", " 5931", "59x1", "localhost:5931",
                                   "console.example:5931", "::1:5931", "[127.0.0.1]:5931", "[::1]", "1.2.3:5931",
                                   "\u0665\u0669"])
def test_listen_refuses_what_is_not_an_ip_address_and_a_port(given, capsys):
    with pytest.raises(SystemExit) as e:
        listen("--listen", given)
    err = capsys.readouterr().err
    assert e.value.code == 1 and len(err.splitlines()) == 1
    assert f"argument --listen: {given!r}: expected [ADDR:]PORT" in err


def test_listen_is_for_the_screen_not_the_serial_port(capsys):
    with pytest.raises(SystemExit):
        listen("--listen", "5931", "--serial")
    assert "argument --serial: not allowed with argument --listen" in capsys.readouterr().err
    assert listen("--serial").listen is None


async def console(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """qemu's side: a greeting, then what it is sent in capitals."""
    writer.write(GREETING)
    while data := await reader.read(65536):
        writer.write(data.upper())
        await writer.drain()
    writer.close()


class FakeCoordinator:
    """VM `tiny` with a `protocol` screen; console URLs on `lab`'s proxy, tokens valid `ttl` seconds."""

    def __init__(self, lab: ConsoleLab, protocol: str = "vnc"):
        self.lab, self.protocol, self.ttl = lab, protocol, 60.0
        self.running = True
        self.opened: list[str] = []  # the kinds of the console URLs handed out
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/vms", self._vms)
        app.router.add_get("/v1/vms/{uuid}/console", self._info)
        app.router.add_post("/v1/vms/{uuid}/console", self._open)
        return app

    async def _vms(self, request: web.Request) -> web.Response:
        return web.json_response({"vms": [{"uuid": VM, "spec": {"name": "tiny"}}]})

    def _stopped(self) -> web.Response:
        return web.json_response({"error": {"code": "not_running", "message": "VM tiny has no console until it runs",
                                            "field": None}}, status=409)

    async def _info(self, request: web.Request) -> web.Response:
        if not self.running:
            return self._stopped()
        return web.json_response({"protocol": self.protocol, "kinds": [self.protocol, "serial"], "host": "h1"})

    async def _open(self, request: web.Request) -> web.Response:
        if not self.running:
            return self._stopped()
        kind = (await request.json()).get("kind") or self.protocol
        self.opened.append(kind)
        token = self.lab.grants.issue(VM, kind, ttl=self.ttl)
        return web.json_response({"url": self.lab.url(VM, kind, token, ws=False), "token": token,
                                  "expires_at": time.time() + self.ttl, "proxy": "cp1"}, status=201)


@contextlib.asynccontextmanager
async def bed(tmp_path: Path, ca: TestCA | None = None, protocol: str = "vnc",
              handler: Any = console) -> AsyncIterator[FakeCoordinator]:
    """The console socket, the proxy and tunnel (TLS on both hops with a `ca`), the stand-in coordinator."""
    sock = tmp_path / "console.sock"
    server = await asyncio.start_unix_server(handler, str(sock))
    lab = await ConsoleLab.start({protocol: sock}, ca=ca)
    fake = FakeCoordinator(lab, protocol)
    runner, port = await serve(fake.app())
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
        await lab.close()
        server.close()


@contextlib.asynccontextmanager
async def hs_listen(fake: FakeCoordinator, capsys: pytest.CaptureFixture[str], *argv: str,
                    ca: Path | None = None) -> AsyncIterator[tuple[str, int]]:
    """`hs vm console tiny --listen ARGV` running until the block ends (as Ctrl-C ends it): the address
    it printed on stdout."""
    a = listen("--listen", *argv)
    task = asyncio.create_task(run(a.command, a, config.Connection(fake.url, TOKEN, ca)))
    async with asyncio.timeout(10):
        while not (out := capsys.readouterr().out) and not task.done():
            await asyncio.sleep(0.01)
    if task.done():
        task.result()  # what it failed with
    scheme, _, address = out.splitlines()[0].partition("://")
    assert scheme == fake.protocol
    host, _, port = address.rpartition(":")
    try:
        yield host.strip("[]"), int(port)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def greeted(address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connected through the bridge, past the console's greeting."""
    reader, writer = await asyncio.open_connection(*address)
    assert await asyncio.wait_for(reader.readexactly(len(GREETING)), 10) == GREETING
    return reader, writer


async def answered(address: tuple[str, int], text: bytes = b"hello") -> None:
    reader, writer = await greeted(address)
    writer.write(text)
    assert await asyncio.wait_for(reader.readexactly(len(text)), 10) == text.upper()
    writer.close()


async def closed(reader: asyncio.StreamReader) -> bool:
    """The bridge ended the connection (without sending anything more)."""
    with contextlib.suppress(ConnectionResetError):
        return await asyncio.wait_for(reader.read(), 10) == b""
    return True


async def said(capsys: pytest.CaptureFixture[str], text: str) -> str:
    """stderr until it has `text` (a connection's end is said once both its sides are closed)."""
    err = ""
    async with asyncio.timeout(5):
        while text not in (err := err + capsys.readouterr().err):
            await asyncio.sleep(0.02)
    return err


async def test_a_client_reaches_the_console_over_tls_verified_with_the_clis_ca(tmp_path, capsys):
    ca = TestCA(tmp_path / "pki")
    async with bed(tmp_path, ca, protocol="spice") as fake:
        assert fake.lab.proxy_url.startswith("https://")
        async with hs_listen(fake, capsys, "0", ca=ca.ca) as address:
            assert address[0] == "127.0.0.1" and address[1] > 0
            await answered(address, b"x" * 300_000)
        async with hs_listen(fake, capsys, "0", ca=TestCA(tmp_path / "other").ca) as address:
            reader, _ = await asyncio.open_connection(*address)
            assert await closed(reader)  # a proxy the CLI's CA does not vouch for gets nothing
            err = capsys.readouterr().err
            assert "no console: the console proxy: " in err and "certificate verify failed" in err, err


async def test_a_connection_after_its_token_expired_gets_a_fresh_one_and_channels_share_one(tmp_path, capsys):
    async with bed(tmp_path, protocol="spice") as fake:
        fake.ttl = 3
        async with hs_listen(fake, capsys, "0") as address:
            await asyncio.gather(*(answered(address) for _ in range(4)))  # SPICE channels, all at once
            shared = len(fake.opened)  # hs's own at the start, and one for the four unless they came in time
            assert shared <= 2
            await asyncio.sleep(fake.ttl + 0.5)  # the proxy refuses those tokens now
            await answered(address)
            assert len(fake.opened) == shared + 1


async def test_a_connection_ends_when_either_side_closes(tmp_path, capsys):
    ended = asyncio.Event()

    async def closing_console(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        if await reader.read(5) == b"quit!":  # the guest's VNC server goes (a VM that stops)
            writer.close()
            return
        await reader.read()  # the client went
        ended.set()
        writer.close()

    async with bed(tmp_path, handler=closing_console) as fake, hs_listen(fake, capsys, "0") as address:
        reader, writer = await greeted(address)
        writer.write(b"quit!")
        assert await closed(reader)
        await said(capsys, "closed by the console proxy after ")

        reader, writer = await greeted(address)
        writer.write(b"stay")
        writer.close()
        await asyncio.wait_for(ended.wait(), 10)
        assert "client closed (1000); 4 bytes to the console" in await said(capsys, "closed by the client after ")


async def test_each_connection_is_bounded_a_client_that_does_not_read_stalls_the_console(tmp_path, capsys):
    """Every hop's kernel buffers fill (loopback TCP grows them to a few MiB each), then the console's writes
    wait: nothing between them queues without a limit."""
    limit, sent = 48 << 20, 0
    stalled = asyncio.Event()

    async def flooding_console(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(GREETING)
        while sent < limit:
            writer.write(bytes(65536))
            try:
                await asyncio.wait_for(writer.drain(), 1)
            except TimeoutError:
                stalled.set()
                return
            sent += 65536

    async with bed(tmp_path, handler=flooding_console) as fake, hs_listen(fake, capsys, "0") as address:
        _, writer = await greeted(address)  # and reads no more
        async with asyncio.timeout(60):
            while not stalled.is_set():
                assert sent < limit
                await asyncio.sleep(0.1)
        writer.close()


async def test_more_connections_than_allowed_are_closed_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(consolebridge, "MAX_CONNECTIONS", 2)
    async with bed(tmp_path) as fake, hs_listen(fake, capsys, "0") as address:
        first, second = await greeted(address), await greeted(address)
        reader, _ = await asyncio.open_connection(*address)
        assert await closed(reader)
        assert "refused, 2 connections are open" in capsys.readouterr().err
        for _, writer in (first, second):
            writer.close()
        async with asyncio.timeout(5):  # their places are free again
            while True:
                try:
                    await answered(address)
                    break
                except asyncio.IncompleteReadError:
                    await asyncio.sleep(0.05)


async def test_a_vm_that_stops_leaves_the_port_open_and_says_why_a_connection_got_nothing(tmp_path, capsys,
                                                                                        monkeypatch):
    monkeypatch.setattr(consolebridge, "REUSE", 0)
    async with bed(tmp_path) as fake, hs_listen(fake, capsys, "0") as address:
        fake.running = False
        reader, _ = await asyncio.open_connection(*address)
        assert await closed(reader)
        assert "no console: the coordinator answered VM tiny has no console until it runs" in capsys.readouterr().err
        fake.running = True
        await answered(address)


async def test_a_stopped_vm_or_a_port_in_use_is_one_line_at_the_start(tmp_path, capsys):
    async with bed(tmp_path) as fake:
        fake.running = False
        with pytest.raises(CliError, match="^VM tiny has no console until it runs$"):
            async with hs_listen(fake, capsys, "0"):
                pass
        fake.running = True
        async with hs_listen(fake, capsys, "0") as (_, port):
            with pytest.raises(CliError, match=f"^cannot listen on 127.0.0.1:{port}: Address already in use$"):
                async with hs_listen(fake, capsys, str(port)):
                    pass


async def printed(fake: FakeCoordinator, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """What `hs ARGV` printed once it listens (then Ctrl-C)."""
    a = parser.build(GROUPS).parse_args(argv)
    task = asyncio.create_task(run(a.command, a, config.Connection(fake.url, TOKEN, None)))
    async with asyncio.timeout(10):
        while not (out := capsys.readouterr()).out:
            await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return out


async def test_the_address_is_alone_on_stdout_and_a_wider_one_is_said_to_be_open_to_anyone(tmp_path, capsys):
    async with bed(tmp_path) as fake:
        out = await printed(fake, capsys, "vm", "console", "tiny", "--listen", "0.0.0.0:0")
    [line] = out.out.splitlines()
    assert line.startswith("vnc://0.0.0.0:") and int(line.rpartition(":")[2]) > 0
    assert f"remote-viewer {line}" in out.err
    assert f"anyone who can reach {line.removeprefix('vnc://')} gets this console" in out.err


async def test_with_json_the_address_is_an_object(tmp_path, capsys):
    async with bed(tmp_path, protocol="spice") as fake:
        out = json.loads((await printed(fake, capsys, "--json", "vm", "console", "tiny", "--listen", "[::1]:0")).out)
    assert out == {"url": f"spice://[::1]:{out['port']}", "kind": "spice", "address": "::1", "port": out["port"]}
    assert out["port"] > 0


async def test_ctrl_c_closes_the_connections_and_the_port(tmp_path, capsys):
    async with bed(tmp_path) as fake:
        async with hs_listen(fake, capsys, "0") as address:
            reader, _ = await greeted(address)
        assert await closed(reader)  # Ctrl-C: the client's connection ends with the bridge
        async with aiohttp.ClientSession() as s, asyncio.timeout(5):
            while True:  # and the proxy's session with it
                async with s.get(f"{fake.lab.proxy_url}/health") as r:
                    if (await r.json())["open"] == 0:
                        break
                await asyncio.sleep(0.02)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*address)
