"""TLS for every HostStack listener and client: one settings section, one way to make each context.

Every process has a `[tls]` section (`TlsSettings`; env `HS_<PROCESS>_TLS` as a JSON object). A listener
serves only TLS: plain HTTP to it fails the handshake and is never answered. Without certificate files a
process does not start, unless `plain_http = true` (for tests and development only), which also lets it
call `http://` URLs. Clients verify servers against the CA (`ca`, default the PKI layout's ca.pem).
File names default to the layout of `agentkit.pki`.
"""

from __future__ import annotations

import functools
import logging
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from agentkit.pki import Layout

log = logging.getLogger(__name__)


class TlsError(Exception):
    """TLS settings that cannot work: missing files, a plain URL where TLS is required."""


class TlsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cert: Path | None = Field(None, description="this process's certificate chain (PEM, leaf first); "
                              "default /etc/hoststack/pki/<process>.pem")
    key: Path | None = Field(None, description="the key of `cert` (PEM); default /etc/hoststack/pki/<process>-key.pem")
    ca: Path | None = Field(None, description="CA certificate(s) that verify the servers this process calls; "
                            "default /etc/hoststack/pki/ca.pem")
    plain_http: bool = Field(False, description="testing and development only: listen and call over plain HTTP")

    def cert_file(self, process: str) -> Path:
        return self.cert or Layout().cert(process)

    def key_file(self, process: str) -> Path:
        return self.key or Layout().key(process)

    def ca_file(self) -> Path:
        return self.ca or Layout().ca

    @property
    def scheme(self) -> str:
        """The scheme of this process's own listener."""
        return "http" if self.plain_http else "https"


def server_context(cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A listener's context: TLS 1.2 or later with `cert`/`key`. Without them (an agent still waiting for its
    certificate) every handshake fails until `load` gives it one; `load` again renews it in place."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        load(ctx, cert, key)
    return ctx


def load(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Serve `cert` from now on (connections already open keep the one they began with)."""
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"TLS certificate {cert} with key {key}: {e}") from None


def listener(settings: TlsSettings, process: str) -> ssl.SSLContext | None:
    """The context a process's listener serves with; None (plain HTTP, warned) only with `plain_http`."""
    if settings.plain_http:
        log.warning("%s serves plain HTTP (tls.plain_http): for tests and development only", process)
        return None
    cert, key = settings.cert_file(process), settings.key_file(process)
    if not cert.exists() or not key.exists():
        raise TlsError(f"{process}: no TLS certificate at {cert} (key {key}): issue one with `hs pki issue`, set "
                       f"tls.cert and tls.key to your own, or set tls.plain_http for tests")
    return server_context(cert, key)


@functools.lru_cache(maxsize=8)
def _client_context(ca: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_context(ca: Path | None) -> ssl.SSLContext:
    """A context that verifies servers against `ca` (None: the system's CAs); made once per file."""
    try:
        return _client_context(ca)
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"CA certificate {ca}: {e}") from None


def client(settings: TlsSettings) -> ssl.SSLContext | None:
    """What this process's clients verify servers with (None with `plain_http`: aiohttp's default)."""
    if settings.plain_http:
        return None
    ca = settings.ca_file()
    return client_context(ca if ca.exists() or settings.ca else None)


def outbound(settings: TlsSettings) -> ssl.SSLContext:
    """What a process verifies the sources it downloads from with: the system's CAs, and the installation's
    CA when there is one (an image store's data URL), so public https URLs and HostStack's own both work."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ca = settings.ca_file()
    if ca.exists():
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as e:
            raise TlsError(f"CA certificate {ca}: {e}") from None
    return ctx


def check_url(url: str, settings: TlsSettings, what: str) -> None:
    """`url` must be https, or http with `plain_http`: credentials never go out in clear by mistake."""
    scheme = urlsplit(url).scheme
    if scheme == "https" or (scheme == "http" and settings.plain_http):
        return
    raise TlsError(f"{what} {url!r}: expected an https:// URL (http:// only with tls.plain_http)")
