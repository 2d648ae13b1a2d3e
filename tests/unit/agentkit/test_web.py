"""Serving an agent's app: its port is bound before its startup runs, so a port in use ends a second copy
of the process with one line before it started anything."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from agentkit.web import STOP_SIGNALS, CannotListen, bound, run_app

ASKING = web.AppKey("asking", asyncio.Task[None])


@pytest.fixture
def signals() -> Iterator[None]:
    """run_app's stop handling ignores the stop signals once it stopped: give pytest its own back."""
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_port_in_use_ends_the_process_with_one_line_before_the_app_starts(signals):
    started: list[bool] = []

    async def pipeline(app: web.Application) -> AsyncIterator[None]:  # an agent's: libvirt, its stream, …
        started.append(True)
        yield

    app = web.Application()
    app.cleanup_ctx.append(pipeline)
    with socket.create_server(("127.0.0.1", 0)) as running:  # the agent already serving on the host
        port = running.getsockname()[1]
        with pytest.raises(SystemExit) as ended:
            run_app("kvmagent", app, "127.0.0.1", port)
    assert ended.value.code == f"kvmagent: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert started == []


def test_the_app_serves_on_its_port_and_refuses_connections_while_it_starts(signals):
    """As before the port was bound early: a connection while the agent starts is refused (a load balancer
    tries another replica), not left waiting; once started it is served, and a SIGTERM stops it."""
    port = free_port()
    seen: list[object] = []

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def ask() -> None:
        async with aiohttp.ClientSession() as client:
            for _ in range(100):
                try:
                    async with client.get(f"http://127.0.0.1:{port}/") as r:
                        seen.append(await r.text())
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    async def starting(app: web.Application) -> None:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        seen.append("refused")
        app[ASKING] = asyncio.create_task(ask())

    app = web.Application()
    app.router.add_get("/", hello)
    app.on_startup.append(starting)
    run_app("kvmagent", app, "127.0.0.1", port)
    assert seen == ["refused", "hello"]


def test_two_stop_signals_at_once_stop_the_app_once_and_its_cleanup_completes(signals):
    """A supervisor signals its group, then its child again: both can reach the loop before it handles either."""
    done: list[str] = []

    async def pipeline(app: web.Application) -> AsyncIterator[None]:
        asyncio.get_running_loop().call_soon(lambda: [os.kill(os.getpid(), signal.SIGTERM) for _ in range(2)])
        yield
        await asyncio.sleep(0.1)  # a cleanup that takes a while, as an agent's components' does
        done.append("cleaned up")

    app = web.Application()
    app.cleanup_ctx.append(pipeline)
    run_app("kvmagent", app, "127.0.0.1", free_port())  # returns: no GracefulExit (SystemExit 1) out of the stop
    assert done == ["cleaned up"]


def test_an_empty_address_binds_both_families_and_a_busy_ipv6_one_is_named():
    port = free_port()
    sockets = bound("", port)
    try:
        assert sorted((s.family, s.getsockname()[:2]) for s in sockets) == [
            (socket.AF_INET, ("0.0.0.0", port)), (socket.AF_INET6, ("::", port))]  # noqa: S104
        assert [s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) for s in sockets
                if s.family == socket.AF_INET6] == [1]
    finally:
        for s in sockets:
            s.close()
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as running:
        port = running.getsockname()[1]
        with pytest.raises(CannotListen) as refused:
            bound("::1", port)
    assert str(refused.value) == f"cannot listen on [::1]:{port}: Address already in use"
