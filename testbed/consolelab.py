"""The console path on one machine, without a coordinator: proxy → agent tunnel → a qemu's console sockets.

- `Grants`: the coordinator's side of tokens as a table (token → grant, tickets signed with a host key
  for `TICKET_LIFETIME` when a token is resolved, as the coordinator signs them), a `Resolver` the proxy is
  built with in place of the coordinator's.
- `ConsoleLab`: the real proxy application and the real agent tunnel (`kvmagent.consoles`) served on
  loopback ports in this process (tests), or each in a process of its own (`python -m testbed.consolelab`,
  for the benchmark, with the grants in a JSON file); plain, or with TLS on both hops as deployed (the
  proxy's and the tunnel's certificates from a test CA, the proxy verifying the tunnel with it).
"""

from __future__ import annotations

import argparse
import json
import ssl
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aiohttp import web

from agentkit import logs, tls
from agentkit.consoles import TICKET_LIFETIME, ConsoleKind, issue_ticket, new_token
from consoleproxy.errors import TokenUnknown
from consoleproxy.grants import Grant
from consoleproxy.main import init_app
from consoleproxy.settings import ConsoleProxySettings
from kvmagent.consoles import ConsoleTunnel
from testbed.certs import TestCA

HOST_KEY = bytes(range(32))


@dataclass(frozen=True)
class Issued:
    """What a token opens: the `kind` console of `vm` through the tunnel at `tunnel_url`, until `expires` (unix
    seconds). Its ticket is signed when it is resolved."""

    vm: str
    kind: ConsoleKind
    tunnel_url: str
    expires: float


@dataclass
class Grants:
    """Token → grant, as the coordinator would answer; tokens of unknown VMs are the caller's business."""

    tunnel: str  # base URL of the agent's API
    key: bytes = HOST_KEY
    table: dict[str, Issued] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)  # every token resolved, in order: what the coordinator was asked

    def issue(self, vm: str, kind: ConsoleKind, ttl: float = 60) -> str:
        token = new_token()
        self.table[token] = Issued(vm, kind, f"{self.tunnel}/v1/consoles/{vm}/{kind}", time.time() + ttl)
        return token

    async def resolve(self, token: str) -> Grant:
        self.asked.append(token)
        if token not in self.table:
            raise TokenUnknown()
        i = self.table[token]  # a ticket signed now: one of a token used later than its lifetime is refused
        return Grant(i.vm, i.kind, i.expires - time.time(), i.tunnel_url,
                     issue_ticket(self.key, i.vm, i.kind, int(time.time()) + TICKET_LIFETIME))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({t: asdict(i) for t, i in self.table.items()}))

    @classmethod
    def load(cls, path: Path) -> Grants:
        return cls("", table={t: Issued(**i) for t, i in json.loads(path.read_text()).items()})


async def serve(app: web.Application, port: int = 0, context: ssl.SSLContext | None = None) -> tuple[
        web.AppRunner, int]:
    """`app` on 127.0.0.1 (a free port unless given, TLS with a `context`): its runner and port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def listener(ca: TestCA | None, name: str) -> ssl.SSLContext | None:
    """The TLS context `name` (proxy, tunnel) serves with: a certificate of `ca` for 127.0.0.1."""
    if ca is None:
        return None
    pair = ca.issue(name)
    return tls.server_context(pair.cert, pair.key)


def proxy_settings(ca: TestCA | None, **proxy: object) -> ConsoleProxySettings:
    """The proxy's settings on loopback; with a `ca`, it verifies the tunnel's certificate with it."""
    return ConsoleProxySettings.model_validate({"listen": "127.0.0.1", **proxy,
                                                **({"tls": {"ca": ca.ca}} if ca else {})})


def tunnel_app(sockets: dict[str, Path], key: bytes = HOST_KEY, idle_timeout: float | None = None) -> web.Application:
    """The agent's console tunnel for one VM whose console sockets are `sockets` (kind → path)."""
    tunnel = ConsoleTunnel(lambda: key, lambda vm, kind: sockets.get(kind), idle_timeout)
    app = web.Application()
    app.add_routes(tunnel.routes())
    return app


@dataclass
class ConsoleLab:
    """Proxy and tunnel served in this process; `close()` stops both."""

    grants: Grants
    proxy_url: str
    runners: list[web.AppRunner]

    @classmethod
    async def start(cls, sockets: dict[str, Path], ca: TestCA | None = None, **proxy: object) -> ConsoleLab:
        """Plain, or with TLS on both hops when given a `ca` (see `listener`, `proxy_settings`)."""
        tunnel_runner, tunnel_port = await serve(tunnel_app(sockets), context=listener(ca, "tunnel"))
        grants = Grants(f"{'wss' if ca else 'ws'}://127.0.0.1:{tunnel_port}")
        settings = proxy_settings(ca, **proxy)
        proxy_runner, proxy_port = await serve(init_app(settings, grants), context=listener(ca, "proxy"))
        return cls(grants, f"{'https' if ca else 'http'}://127.0.0.1:{proxy_port}", [proxy_runner, tunnel_runner])

    def url(self, vm: str, kind: ConsoleKind, token: str | None, ws: bool = True) -> str:
        base = f"{self.proxy_url}/consoles/{vm}/{kind}" + ("/ws" if ws else "")
        return base if token is None else f"{base}?token={token}"

    async def close(self) -> None:
        for r in self.runners:
            await r.cleanup()


def main() -> None:
    """`proxy PORT GRANTS.json` or `tunnel PORT KIND=SOCKET...`, with `--tls CA_DIR` for TLS (a `TestCA`'s
    directory): one side in a process of its own."""
    p = argparse.ArgumentParser(prog="testbed.consolelab")
    p.add_argument("role", choices=["proxy", "tunnel"])
    p.add_argument("port", type=int)
    p.add_argument("args", nargs="*")
    p.add_argument("--tls", type=Path, help="the directory of a TestCA")
    a = p.parse_args()
    logs.setup("WARNING")
    ca = TestCA(a.tls) if a.tls else None
    if a.role == "proxy":
        app = init_app(proxy_settings(ca, port=a.port), Grants.load(Path(a.args[0])))
    else:
        app = tunnel_app({k: Path(v) for k, _, v in (s.partition("=") for s in a.args)})
    web.run_app(app, host="127.0.0.1", port=a.port, print=None, access_log=None, handle_signals=True,
                ssl_context=listener(ca, a.role))


if __name__ == "__main__":
    main()
