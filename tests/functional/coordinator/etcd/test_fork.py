"""A process that uses the coordinator's etcd driver forks its children without gRPC's fork handlers: with them,
a child aborted in them now and then before its exec (a deploy "killed by SIGABRT")."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import asyncio, subprocess, sys
import uvloop
import coordinator.etcd  # what the coordinator imports before gRPC
import grpc

async def main():
    channel = grpc.aio.insecure_channel("127.0.0.1:1")  # nothing listens: gRPC's threads keep trying
    try:
        await asyncio.wait_for(channel.channel_ready(), 0.3)
    except (TimeoutError, grpc.aio.AioRpcError):
        pass
    for _ in range(3):  # forks, as uvloop spawns the deployer
        child = await asyncio.create_subprocess_exec("cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert await child.communicate(b"request") == (b"request", None)
    await channel.close()

uvloop.run(main())
"""


def test_children_are_forked_without_grpc_fork_handlers():
    p = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60,
                       env={"GRPC_VERBOSITY": "debug", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert p.returncode == 0, p.stderr
    assert "fork" not in p.stderr.lower(), p.stderr  # gRPC says "skipping fork() handlers" when they are on
