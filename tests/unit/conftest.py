"""Unit layer: no root, no subprocess, no network beyond loopback (cloud-init's `disable_subp_usage`).

An autouse guard makes any subprocess start, and any socket other than a loopback or unix one, fail
the test that tried it: code that needs the real thing is tested in `tests/functional/`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import subprocess
from typing import Any

import pytest

_ALLOWED_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)


class UnplannedSideEffect(AssertionError):
    pass


def _refuse(what: str, skip: int = 0):
    """A stand-in that fails; `skip` leading arguments (a bound `self`) are left out of the message."""
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise UnplannedSideEffect(f"unit tests may not {what}: {args[skip:skip + 1]!r}")
    return fail


def _loopback_only(address: Any) -> None:
    if isinstance(address, tuple) and address and isinstance(address[0], str) and address[0]:
        host = address[0]
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            if host != "localhost":
                raise UnplannedSideEffect(f"unit tests may not resolve or reach {host!r}") from None
            return
        if not (ip.is_loopback or ip.is_unspecified):
            raise UnplannedSideEffect(f"unit tests may not reach {host}")


class _GuardedSocket(socket.socket):
    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None):
        if fileno is None and family not in (-1, *_ALLOWED_FAMILIES):
            raise UnplannedSideEffect(f"unit tests may not open a socket of family {family}")
        super().__init__(family, type, proto, fileno)

    def connect(self, address: Any) -> None:
        _loopback_only(address)
        super().connect(address)

    def connect_ex(self, address: Any) -> int:
        _loopback_only(address)
        return super().connect_ex(address)

    def bind(self, address: Any) -> None:
        _loopback_only(address)
        super().bind(address)

    def sendto(self, *args: Any) -> int:
        _loopback_only(args[-1])
        return super().sendto(*args)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(autouse=True)
def no_side_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start a subprocess", skip=1))
    monkeypatch.setattr(asyncio, "create_subprocess_exec", _refuse("start a subprocess"))
    monkeypatch.setattr(asyncio, "create_subprocess_shell", _refuse("start a subprocess"))
    monkeypatch.setattr(os, "system", _refuse("run a shell"))
    monkeypatch.setattr(os, "fork", _refuse("fork"))
    monkeypatch.setattr(socket, "socket", _GuardedSocket)
