"""The agent's certificate keeper: a refused request is asked again soon (an agent without a certificate
serves no API), then less and less often, and the certificate it gets is served by the listener."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import stat

import pytest

from agentkit import identity, pki

TMP = re.compile(r"\.[0-9a-f]{12}\.tmp$")  # durable.write_atomic's temporary file: its random part


class Refused(Exception):
    pass


async def test_a_refused_request_is_asked_again_soon_then_less_often(tmp_path, monkeypatch):
    cert, key = pki.make_ca("test CA")
    ca = pki.Issuer(cert, key)
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)
    monkeypatch.setattr(identity.asyncio, "sleep", sleep)
    asked = 0

    async def ask(csr: bytes) -> str:
        nonlocal asked
        asked += 1
        if asked <= 3:
            raise Refused("401 token expired")
        return pki.pem([ca.sign_request(csr, "kvmagent", ["127.0.0.1"], 30), ca.cert]).decode()

    keeper = identity.Certificate(tmp_path, "kvmagent")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    task = asyncio.create_task(keeper.keep(context, ask, (Refused,)))
    async with asyncio.timeout(10):
        while asked < 4 or not keeper.cert.exists():
            await real_sleep(0.01)
    await real_sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slept[:3] == [identity.FIRST_RETRY, 2 * identity.FIRST_RETRY, 4 * identity.FIRST_RETRY]
    assert keeper.renew_in() > 0  # the certificate is kept and not due


async def test_a_key_written_without_its_certificate_is_due_at_once(tmp_path):
    """`obtain` writes the new key, then the certificate: an agent killed (or a host powered off) in between
    has a certificate its key does not match, which no listener can serve; not due, it stayed so for weeks."""
    cert, key = pki.make_ca("test CA")
    ca = pki.Issuer(cert, key)

    async def ask(csr: bytes) -> str:
        return pki.pem([ca.sign_request(csr, "kvmagent", ["127.0.0.1"], 30), ca.cert]).decode()

    keeper = identity.Certificate(tmp_path, "kvmagent")
    await keeper.obtain(ask)
    assert keeper.renew_in() > 0
    pki.write_key(keeper.key, pki.new_key())  # the next renewal's first step, and no second one
    assert keeper.renew_in() == 0
    await keeper.obtain(ask)
    assert keeper.renew_in() > 0
    identity.tls.load(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), keeper.cert, keeper.key)  # a pair again


def test_a_renewed_token_is_kept_durably_and_for_the_agent_alone(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", fsync)
    identity.keep_token(tmp_path, "configured", "renewed")
    assert [TMP.sub(".tmp", p) for p in synced] == [str(tmp_path / f".{identity.TOKEN_FILE}.tmp"), str(tmp_path)]
    # its content (written beside it), then the rename
    assert stat.S_IMODE((tmp_path / identity.TOKEN_FILE).stat().st_mode) == 0o600
    assert identity.current_token(tmp_path, "configured") == "renewed"
