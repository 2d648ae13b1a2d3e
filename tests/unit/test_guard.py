"""The unit layer's guard really refuses what unit tests may not do."""

from __future__ import annotations

import asyncio
import socket
import subprocess

import pytest


def test_subprocess_is_refused():
    with pytest.raises(AssertionError, match="subprocess"):
        subprocess.run(["true"])  # noqa: S607


async def test_async_subprocess_is_refused():
    with pytest.raises(AssertionError, match="subprocess"):
        await asyncio.create_subprocess_exec("true")


def test_only_loopback_is_reachable():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(AssertionError, match="198.18.0.1"):
            s.connect(("198.18.0.1", 53))


def test_raw_and_netlink_sockets_are_refused():
    with pytest.raises(AssertionError, match="family"):
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
