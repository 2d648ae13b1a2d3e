"""TLS on every listener, plain HTTP refused, and credentials scoped to what their holder does (issue 14).

The coordinator, a real kvmagent and a real cephagent serve TLS with certificates of the run's CA
(the kvmagent's asked of the coordinator with its token); each refuses plain HTTP, and clients that do
not trust the CA refuse them. Admin, reader and metrics tokens reach what they may and nothing else; the
agent API takes its own tokens, never the host's coordinator token.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import sys
import time

import aiohttp
import pytest
from cryptography import x509

from agentkit.tls import client_context
from coordinator.client import ApiClientError, Client
from testbed import promtext
from testbed.coordinators import Coordinator, secret_key
from testbed.kvmhost import KvmHost
from testbed.pki import connect, refuses_plain_http
from testbed.ports import free_port
from testbed.switch import Switch

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def kvm(run, coordinator):
    host = KvmHost(run, Switch(run), "wire1")

    async def register() -> None:
        async with coordinator.client() as api:
            await host.register(api)
    asyncio.run(register())
    host.start(coordinator, start_libvirt=False, metrics_token="scraper-token-0123456789")
    yield host
    host.close()


def test_the_coordinator_serves_tls_only(coordinator):
    assert refuses_plain_http("127.0.0.1", coordinator.port)
    with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust the run's CA
        socket_tls("127.0.0.1", coordinator.port, ssl.create_default_context())
    cert = socket_tls("127.0.0.1", coordinator.port, client_context(coordinator.ca))
    assert cert["subject"] == ((("commonName", "coordinator"),),)


def socket_tls(host: str, port: int, ctx: ssl.SSLContext) -> dict:
    with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
        return s.getpeercert()


async def test_scoped_tokens_reach_only_what_they_may(coordinator):
    async with Client(coordinator.url, "reader-token-0123456789", ca=coordinator.ca) as reader:
        assert "hosts" in await reader.get("/v1/hosts")
        with pytest.raises(ApiClientError) as e:
            await reader.post("/v1/hosts", {"name": "by-reader", "address": "198.18.9.9"})
        assert e.value.status == 403 and e.value.code == "forbidden"
    async with Client(coordinator.url, "metrics-token-0123456789", ca=coordinator.ca) as scraper:
        with pytest.raises(ApiClientError) as e:
            await scraper.get("/v1/hosts")
        assert e.value.status == 403
        assert (await scraper.get("/health"))["status"] == "ok"


async def test_the_kvmagent_serves_tls_with_the_certificate_it_asked_for(kvm, coordinator):
    kvm.wait_api()
    address, port = kvm.api_address, kvm.api_port
    assert refuses_plain_http(address, port, kvm.ns.name)
    with connect(address, port, kvm.ns.name) as raw, client_context(coordinator.ca).wrap_socket(
            raw, server_hostname=address) as t:
        der = t.getpeercert(True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    assert cert.subject.rfc4514_string() == f"CN={kvm.uuid}"
    assert (kvm.state_dir / "tls" / "kvmagent-key.pem").stat().st_mode & 0o077 == 0


def agent_get(kvm: KvmHost, path: str, token: str) -> int:
    out = kvm.ns.sh("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(kvm.ca), "-H",
                    f"Authorization: Bearer {token}", f"https://{kvm.api_address}:{kvm.api_port}{path}")
    return int(out.stdout)


def test_the_agent_api_takes_its_own_tokens_never_the_host_token(kvm):
    kvm.wait_api()
    assert agent_get(kvm, "/v1/state", kvm.api_token) == 200
    assert agent_get(kvm, "/v1/state", kvm.token) == 401  # the coordinator credential opens nothing here
    assert agent_get(kvm, "/metrics", "scraper-token-0123456789") == 200
    assert agent_get(kvm, "/v1/state", "scraper-token-0123456789") == 401  # a scraper reads no state
    text = kvm.agent_api("/metrics")["text"]  # type: ignore[index]
    assert promtext.value(text, "hoststack_flatnet_antispoof_dropped_total", reason="spoofed") == 0  # and parses
    assert promtext.value(text, "hoststack_http_requests_total", route="/v1/state", method="GET", code="401") == 2


async def test_the_credential_key_is_its_own_secret(run, etcd, pki, api, token):
    """Stored credentials need `secret_key`, and only it: a replica with another admin token reads them."""
    await api.post("/v1/hosts", {"name": "keyed", "address": "198.18.9.11", "ssh": {"password": "pw-0123"}})
    other = Coordinator(run, etcd, "another-admin-token-0123", name="coord-other-admin", pki=pki,
                        secret_key=secret_key(token)).start()
    no_key = Coordinator(run, etcd, "admin-without-key-0123", name="coord-nokey", pki=pki, secret_key=None).start()
    try:
        async with other.client() as a:
            assert (await a.post("/v1/hosts/keyed/ssh/reveal"))["password"] == "pw-0123"
        async with no_key.client() as a:
            for call in (a.post("/v1/hosts", {"name": "keyless", "address": "198.18.9.10", "ssh": {"password": "p"}}),
                         a.post("/v1/hosts/keyed/ssh/reveal")):
                with pytest.raises(ApiClientError) as e:
                    await call
                assert e.value.code == "not_configured" and "secret_key" in e.value.message
    finally:
        other.stop()
        no_key.stop()


async def test_clients_refuse_a_server_without_a_certificate_of_the_ca(coordinator, pki, run):
    async with aiohttp.ClientSession() as s:  # the system's CAs only
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await s.get(coordinator.url + "/health")


async def test_etcd_takes_only_tls_clients_with_a_certificate_and_a_user(etcd):
    """The coordinator's hop to etcd: TLS, client certificates and user/password auth (this module's etcd)."""
    from coordinator.etcd.store import Store, StoreUnavailable

    member = etcd.members[0]
    assert refuses_plain_http("127.0.0.1", member.port)
    with pytest.raises(ssl.SSLError):  # trusts etcd, presents no client certificate: the handshake fails
        with socket.create_connection(("127.0.0.1", member.port), timeout=5) as raw, client_context(
                etcd.client_tls.ca.ca).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"x")
            s.recv(1)
    for config, readable in ((etcd.config(), True), (etcd.config().replace(user=None, password=None), False)):
        store = Store(config)
        try:
            await store.connect()
            if readable:
                assert await store.get("/hs/nothing") is None
            else:
                with pytest.raises(StoreUnavailable, match="permission denied"):
                    await store.get("/hs/nothing")
        finally:
            await store.close()


async def test_the_console_proxy_serves_tls_with_the_certificate_it_asked_for(run, coordinator, api):
    """Browsers reach the proxy over https/wss only; without a certificate of the operator's it asks the
    coordinator for one with its own token, for its registered address."""
    proxy = await api.post("/v1/hosts", {"name": "proxy-tls", "address": "127.0.0.1", "kind": "consoleproxy"})
    port = free_port()
    env = {"HS_CONSOLEPROXY_CONFIG": "/nonexistent", "HS_CONSOLEPROXY_COORDINATOR_URL": coordinator.url,
           "HS_CONSOLEPROXY_UUID": proxy["uuid"], "HS_CONSOLEPROXY_TOKEN": proxy["token"],
           "HS_CONSOLEPROXY_LISTEN": "127.0.0.1", "HS_CONSOLEPROXY_PORT": str(port),
           "HS_CONSOLEPROXY_STATE_DIR": str(run.path("proxy-tls-state")),
           "HS_CONSOLEPROXY_TLS": json.dumps({"ca": str(coordinator.ca)})}
    proc = run.popen([sys.executable, "-m", "consoleproxy.main"], log_name="proxy-tls", env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                cert = socket_tls("127.0.0.1", port, client_context(coordinator.ca))
                break
            except (OSError, ssl.SSLError):
                assert proc.poll() is None and time.monotonic() < deadline, run.path("proxy-tls.log").read_text()
                await asyncio.sleep(0.3)
        assert cert["subject"] == ((("commonName", proxy["uuid"]),),)
        assert refuses_plain_http("127.0.0.1", port)
    finally:
        run.stop(proc)
