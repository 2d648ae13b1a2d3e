"""What the Ceph domain tests share: a cluster's identity and answers, settings that reach stand-in agents."""

from __future__ import annotations

from typing import Any

from agentkit.tls import TlsSettings
from coordinator.settings import CoordinatorSettings

FSID = "0f1e2d3c-0000-4000-8000-00000000000a"
TOKEN = "t" * 24
SECRET_KEY = "aGVsbG8taG9zdHN0YWNrLWNyZWRlbnRpYWwta2V5LTE="  # a Fernet key: 32 bytes, url-safe base64
HEALTH = {"status": "ok", "fsid": FSID, "client": "client.admin", "version": "9.9"}  # a cephagent's `GET /health`


def cluster(fsid: str = FSID, mons: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A `GET /v1/cluster` answer: one mon `a` on 127.0.0.1:6789 in quorum unless `mons` says otherwise."""
    if mons is None:
        mons = [{"name": "a", "rank": 0, "addr": "127.0.0.1:6789", "addrs": ["127.0.0.1:6789"], "in_quorum": True}]
    return {"fsid": fsid, "health": {"status": "HEALTH_OK"}, "capacity": {"total": 100, "available": 60, "used": 40},
            "mons": mons, "pools": [{"name": "p", "id": 1, "stored": 1, "used": 2, "available": 3, "total": 5,
                                     "objects": 1}]}


def settings(port: int, token: str | None = TOKEN) -> CoordinatorSettings:
    return CoordinatorSettings(admin_token="a" * 16, cephagent_port=port, cephagent_token=token, secret_key=SECRET_KEY,
                               tls=TlsSettings(plain_http=True))  # the stand-ins speak plain HTTP
