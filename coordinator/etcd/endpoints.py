"""Where the etcd members are and how to talk to them: endpoints, TLS files, user and password.

Endpoints are written as etcd's own clients take them: `host:port`, `http://host:port` or
`https://host:port` (IPv6 as `[addr]:port`), several of them as a list or one comma-separated string.
An endpoint without a scheme uses TLS when a CA or client certificate is configured. Instead of a list,
`discovery_srv` names a DNS domain whose SRV records list the members (see `srv.py`).

NamedTuples, not dataclasses: `hs-ctl backup` reads these settings and should not pay for importing
dataclasses (`agentkit.configfile`).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from agentkit.configfile import as_number, as_path, as_text, gather

if TYPE_CHECKING:  # not imported: hs-ctl backup reaches etcd without the coordinator's settings model
    from coordinator.settings import CoordinatorSettings

DEFAULT_PORT = 2379
SETTINGS = ("etcd", "etcd_discovery_srv", "etcd_discovery_srv_name", "etcd_ca", "etcd_cert", "etcd_key", "etcd_user",
            "etcd_password", "etcd_timeout", "etcd_attempt_timeout")  # the coordinator's settings of the driver


class Endpoint(NamedTuple):
    """One member's client address, and whether it speaks TLS."""

    host: str
    port: int
    tls: bool

    @property
    def target(self) -> str:
        """The gRPC target: `host:port` (IPv6 bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return ("https://" if self.tls else "http://") + self.target


class TlsFiles(NamedTuple):
    """PEM files: the CA that signed the members' certificates (None: the system's roots), and the
    client certificate and key etcd's `--client-cert-auth` wants (both or neither: `EtcdConfig` checks)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @property
    def configured(self) -> bool:
        return any((self.ca, self.cert, self.key))

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(ca, key, cert) bytes as grpc.ssl_channel_credentials takes them."""
        def load(p: Path | None) -> bytes | None:
            return p.read_bytes() if p else None
        return load(self.ca), load(self.key), load(self.cert)


class EtcdConfig(NamedTuple):
    """Everything the driver needs to reach the cluster; `timeout` bounds each request, failover included.
    Made checked by the class methods and `replace`."""

    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    discovery_srv: str | None = None
    discovery_srv_name: str = ""
    tls: TlsFiles = TlsFiles()
    user: str | None = None
    password: str | None = None
    timeout: float = 10.0
    attempt_timeout: float = 1.5
    spread: bool = True  # start at a random member, so that replicas spread; False: the first one listed
    nameservers: tuple[str, ...] = ()  # for SRV lookups; empty: those of /etc/resolv.conf

    def __repr__(self) -> str:  # without the password: configurations are logged
        shown = (f"{k}={v!r}" for k, v in zip(self._fields, self, strict=True) if k != "password")
        return f"EtcdConfig({', '.join(shown)})"

    def checked(self) -> EtcdConfig:
        """This configuration, or ValueError naming what is wrong with it."""
        if not 0 < self.attempt_timeout <= self.timeout:
            raise ValueError("etcd timeouts: 0 < attempt timeout <= timeout")
        if (self.user is None) != (self.password is None):
            raise ValueError("etcd user and password go together")
        if (self.tls.cert is None) != (self.tls.key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        if not self.discovery_srv:
            parse(self.endpoints, self.tls.configured)  # fail at start-up, not at the first request
        return self

    def replace(self, **changes: Any) -> EtcdConfig:
        return self._replace(**changes).checked()

    @classmethod
    def from_settings(cls, s: CoordinatorSettings) -> EtcdConfig:
        """The coordinator's `etcd*` settings; ValueError names what is wrong with them."""
        password = None if s.etcd_password is None else s.etcd_password.get_secret_value()
        return cls(endpoints=tuple(split(s.etcd)), discovery_srv=s.etcd_discovery_srv,
                   discovery_srv_name=s.etcd_discovery_srv_name, tls=TlsFiles(s.etcd_ca, s.etcd_cert, s.etcd_key),
                   user=s.etcd_user, password=password, timeout=s.etcd_timeout,
                   attempt_timeout=s.etcd_attempt_timeout).checked()

    @classmethod
    def from_file(cls, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> EtcdConfig:
        """The same settings read from the coordinator's file and `HS_COORDINATOR_*` alone, without its
        whole settings model (pydantic): what hs-ctl backup reaches etcd with, as a fast-starting job.
        ConfigError or ValueError names what is wrong with them."""
        got = gather(SETTINGS, "coordinator", path, env, some=True)
        srv = got.get("etcd_discovery_srv", as_text)
        if srv and "etcd" in got.values:
            raise ValueError("set either etcd or etcd_discovery_srv, not both")
        d = cls._field_defaults
        return cls(endpoints=tuple(got.get("etcd", _endpoints, d["endpoints"])), discovery_srv=srv,
                   discovery_srv_name=got.get("etcd_discovery_srv_name", as_text, ""),
                   tls=TlsFiles(*(got.get(f"etcd_{k}", as_path) for k in ("ca", "cert", "key"))),
                   user=got.get("etcd_user", as_text), password=got.get("etcd_password", as_text, hidden=True),
                   timeout=got.get("etcd_timeout", as_number, d["timeout"]),
                   attempt_timeout=got.get("etcd_attempt_timeout", as_number, d["attempt_timeout"])).checked()

    @classmethod
    def of(cls, endpoints: str | Sequence[str], **kw: Any) -> EtcdConfig:
        return cls(endpoints=tuple(split(endpoints)), **kw).checked()


def split(value: str | Sequence[str]) -> builtins.list[str]:
    """A list, or one comma-separated string, of endpoints."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [i.strip() for i in items if i.strip()]


def _endpoints(v: object) -> builtins.list[str]:
    if isinstance(v, list) and all(isinstance(e, str) for e in v):
        return split(v)
    return split(as_text(v))


def parse(endpoints: Sequence[str], tls_default: bool) -> builtins.list[Endpoint]:
    if not endpoints:
        raise ValueError("no etcd endpoint given")
    return [_parse_one(e, tls_default) for e in endpoints]


def _parse_one(text: str, tls_default: bool) -> Endpoint:
    url = urlsplit(text if "://" in text else f"//{text}")
    if url.scheme not in ("", "http", "https") or url.path not in ("", "/") or url.query or not url.hostname:
        raise ValueError(f"etcd endpoint {text!r} is not host:port or http(s)://host:port")
    try:
        port = DEFAULT_PORT if url.port is None else url.port
    except ValueError:
        port = 0
    if not port:  # out of range, or 0 (no member listens there; it was read as the default port)
        raise ValueError(f"etcd endpoint {text!r} has a bad port (1-65535)")
    return Endpoint(url.hostname, port, url.scheme == "https" if url.scheme else tls_default)
