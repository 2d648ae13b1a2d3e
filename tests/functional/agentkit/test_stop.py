"""A served process stops once, whatever signals follow the first: run by the supervisor loop that hosts
without systemd get (deployer.render.SUPERVISOR), which is stopped by a signal to its group and then signals
its child again, and signalled once more while it stops (an operator's second Ctrl-C, a second stop)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

from deployer import render
from deployer.remote import host
from testbed.ports import free_port

APP = """
import asyncio, logging, os, sys
from aiohttp import web
from agentkit.web import run_app

async def work(app):
    print(f"started {os.getpid()}", flush=True)
    yield
    print("stopping", flush=True)
    await asyncio.sleep(0.5)  # a cleanup that takes a while, as an agent's components do
    print("cleaned up", flush=True)

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
app = web.Application()
app.cleanup_ctx.append(work)
run_app("app", app, "127.0.0.1", int(sys.argv[1]))
"""


def wait_for(path: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} not in {path}: {path.read_text() if path.exists() else ''}"
        time.sleep(0.05)


def test_a_supervised_process_completes_its_stop_through_the_second_signal(tmp_path):
    app, log, pidfile, script = tmp_path / "app.py", tmp_path / "log" / "app.log", tmp_path / "app.pid", \
        tmp_path / "supervise.sh"
    app.write_text(APP)
    checkout = Path(__file__).resolve().parents[3]  # the supervisor's clean environment would import the venv's
    command = shlex.join(["env", f"PYTHONPATH={checkout}", sys.executable, str(app), str(free_port())])
    script.write_text(render.SUPERVISOR.format(name="app", pidfile=pidfile, logdir=log.parent, nofile=1024,
                                               command=command, log=log))
    supervisor = host._start_supervised({"log": str(log), "supervisor": str(script), "pidfile": str(pidfile)})
    try:
        wait_for(log, "started")
        child = int(re.findall(r"started (\d+)", log.read_text())[0])
        os.killpg(supervisor, signal.SIGTERM)  # as the deployer stops it
        wait_for(log, "stopping")
        os.kill(child, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while host._supervisor_pid(str(pidfile), str(script)) is not None:
            assert time.monotonic() < deadline, "the supervisor did not end"
            time.sleep(0.05)
    finally:
        host._stop_supervised(str(pidfile), str(script))
    out = log.read_text()
    assert "already stopping: SIGTERM ignored" in out, out
    assert "cleaned up" in out and "Traceback" not in out, out
