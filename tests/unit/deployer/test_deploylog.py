"""deployer.deploylog against a real HTTP server on loopback."""

from __future__ import annotations

import time

from deployer.deploylog import DeployLog
from testbed.deploylab import StubCoordinator


def test_entries_arrive_in_order_with_the_admin_token():
    stub = StubCoordinator("adm").start()
    try:
        dlog = DeployLog(stub.api_url, "adm")
        for i in range(20):
            dlog.post("u1", {"host": "h", "task": f"t{i}", "phase": "before", "ok": None, "duration_ms": None,
                             "message": ""})
        dlog.close()
        assert [e["task"] for e in stub.entries] == [f"t{i}" for i in range(20)]
        assert not dlog.failed
        bad = DeployLog(stub.api_url, "wrong")
        bad.post("u1", {"host": "h", "task": "x", "phase": "after", "ok": True, "duration_ms": 1, "message": ""})
        bad.close()
        assert bad.failed and len(stub.entries) == 20
    finally:
        stub.stop()


def test_an_absent_coordinator_neither_raises_nor_blocks():
    dlog = DeployLog("http://127.0.0.1:9", None, timeout=0.5)
    t0 = time.monotonic()
    dlog.post("u1", {"host": "h", "task": "x", "phase": "before"})
    dlog.close()
    assert dlog.failed and time.monotonic() - t0 < 3
