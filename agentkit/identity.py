"""An agent's credentials at the coordinator: its token and its TLS certificate, both renewed by the agent.

The token comes from the agent's config; when the coordinator asks for a renewal (a token lifetime is
set), the renewed token is kept in the agent's state directory together with the digest of the configured
token it replaced, so a redeploy that writes a new token into the config wins over it. The certificate is
asked of the coordinator with the token (the key never leaves the host) and renewed when a third of its
life is left; the agent's listener serves the new one without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from agentkit import pki, tls
from agentkit.durable import write_atomic

log = logging.getLogger(__name__)
TOKEN_FILE = "host-token.json"
RENEW_AT = 1 / 3  # part of a certificate's life left when it is renewed
FIRST_RETRY, RETRY = 1.0, 30.0  # an agent without a certificate serves no API: try again soon, then less often
Ask = Callable[[bytes], Awaitable[str]]  # PEM request in, PEM chain out


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def current_token(state: Path, configured: str) -> str:
    """The token to present: the renewed one kept in `state` if it replaced `configured`, else `configured`."""
    try:
        kept = json.loads((state / TOKEN_FILE).read_text())
    except (OSError, ValueError):
        return configured
    if isinstance(kept, dict) and kept.get("replaces") == _digest(configured) and isinstance(kept.get("token"), str):
        return str(kept["token"])
    return configured


def keep_token(state: Path, configured: str, token: str) -> None:
    """Remember a renewed token (mode 0600, replaced whole by a rename, durably: the one it replaces expires a
    third of its lifetime later, and a host that lost the rename in a power loss and stayed down longer was
    locked out until a redeploy)."""
    state.mkdir(parents=True, exist_ok=True)
    write_atomic(state / TOKEN_FILE, json.dumps({"token": token, "replaces": _digest(configured)}).encode(), 0o600)


def listener(settings: tls.TlsSettings, process: str, directory: Path, coordinator_url: str | None
             ) -> ssl.SSLContext | None:
    """An agent's listener context: the operator's certificate (`tls.cert`), else the one the agent keeps in
    `directory` (none yet: it asks the coordinator, see `Certificate.keep`); None with `plain_http`."""
    if coordinator_url:
        tls.check_url(coordinator_url, settings, "coordinator_url")
    if settings.plain_http or settings.cert is not None:
        return tls.listener(settings, process)
    return Certificate(directory, process).context()


class Certificate:
    """The agent's certificate kept in `directory` (agentkit.pki names), asked for with an `Ask`."""

    def __init__(self, directory: Path, name: str, clock: Callable[[], float] = time.time):
        self.layout = pki.Layout(directory)
        self.name = name
        self.clock = clock

    @property
    def cert(self) -> Path:
        return self.layout.cert(self.name)

    @property
    def key(self) -> Path:
        return self.layout.key(self.name)

    def context(self) -> ssl.SSLContext:
        """A listener's context with the certificate kept now, if it loads (else none until `keep` gets one)."""
        ctx = tls.server_context(None, None)
        try:
            tls.load(ctx, self.cert, self.key)
        except tls.TlsError:
            pass
        return ctx

    def renew_in(self) -> float:
        """Seconds until the certificate is due for renewal (0: now: missing, unreadable, not of the key kept
        (`obtain` cut short between the two) or due)."""
        try:
            cert = pki.read_certs(self.cert)[0]
            key = pki.read_key(self.key)
        except pki.PkiError:
            return 0.0
        if cert.public_key() != key.public_key():
            log.warning("TLS certificate %s is not of key %s (a renewal cut short): renewing it", self.cert, self.key)
            return 0.0
        left = pki.life_left(cert, self.clock())
        lifetime = cert.not_valid_after_utc.timestamp() - cert.not_valid_before_utc.timestamp()
        return max((left - RENEW_AT) * lifetime, 0.0)

    async def obtain(self, ask: Ask) -> None:
        """A new key and the coordinator's certificate for it, written key first (a mismatch is due again)."""
        key = pki.new_key()
        chain = await ask(pki.request(key, self.name))
        self.layout.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pki.write_key(self.key, key)
        tmp = self.cert.with_name(f".{self.cert.name}.new")
        tmp.write_text(chain)
        pki.read_certs(tmp)  # the answer is a certificate before it replaces the one we have
        os.replace(tmp, self.cert)
        log.info("new TLS certificate from the coordinator at %s", self.cert)

    async def keep(self, context: ssl.SSLContext, ask: Ask, failures: tuple[type[BaseException], ...]) -> None:
        """For ever: obtain the certificate when due and serve it; `failures` (the coordinator unreachable
        or refusing — also a token renewed as the request went out) are retried after a pause that doubles
        from FIRST_RETRY to RETRY."""
        pause = FIRST_RETRY
        while True:
            wait = self.renew_in()
            if wait > 0:
                await asyncio.sleep(min(wait, 86400))
                continue
            try:
                await self.obtain(ask)
            except failures as e:
                log.warning("TLS certificate not renewed, next try in %.0f s: %s", pause, e)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY)
                continue
            pause = FIRST_RETRY
            tls.load(context, self.cert, self.key)
