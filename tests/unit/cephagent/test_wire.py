"""Wire models of the cephagent API: strict bodies, safe names, and the helpers callers use."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from cephagent.main import ceph_ctx, init_app
from cephagent.settings import CephAgentSettings
from cephagent.wire import (
    ClusterInfo,
    CreateVolumeRequest,
    ImageImportRequest,
    ParentSpec,
    PoolRequest,
    Progress,
    ResizeRequest,
)

CLUSTER = {"fsid": "f", "health": {"status": "HEALTH_OK"}, "capacity": {"total": 10, "available": 6, "used": 4},
           "mons": [{"name": "a", "rank": 0, "addr": "10.0.0.1:6789", "addrs": ["10.0.0.1:3300", "10.0.0.1:6789"],
                     "in_quorum": True},
                    {"name": "b", "rank": 1, "addr": "[fd00::5]:6789", "addrs": ["[fd00::5]:6789"],
                     "in_quorum": False}],
           "pools": [{"name": "p", "id": 1, "stored": 1, "used": 2, "available": 3, "total": 5, "objects": 1}]}


def test_mon_at_matches_any_protocol_and_ipv6_literals():
    info = ClusterInfo.model_validate(CLUSTER)
    assert info.mon_at("10.0.0.1", 3300).name == info.mon_at("10.0.0.1", 6789).name == "a"
    assert info.mon_at("fd00::5", 6789).name == "b"
    assert info.mon_at("10.0.0.2", 6789) is None


def test_pool_lookup():
    info = ClusterInfo.model_validate(CLUSTER)
    assert info.pool("p").total == 5 and info.pool("q") is None


@pytest.mark.parametrize("name", ["a/b", "a@b", "a b", "", "-x", "x" * 129])
def test_names_that_would_break_specs_are_refused(name):
    with pytest.raises(ValidationError):
        PoolRequest(name=name)


def test_bodies_refuse_unknown_fields_and_bad_sizes():
    with pytest.raises(ValidationError, match="extra"):
        PoolRequest.model_validate({"name": "p", "mustExist": True})
    with pytest.raises(ValidationError):
        CreateVolumeRequest(pool="p", name="v", size=0)


def test_an_import_url_that_cannot_be_fetched_is_refused_at_the_edge():
    with pytest.raises(ValidationError, match="Port out of range"):
        ImageImportRequest(pool="p", name="i", url="http://127.0.0.1:99999/a.raw")


def test_specs_and_percent():
    assert ParentSpec(pool="p", image="i").spec == "p/i@base"
    assert Progress(phase="write", done=1, total=3).percent == 33.3
    assert Progress(phase="queued").percent is None


@pytest.mark.parametrize("size", [1000, (1 << 30) + 1, 511])
async def test_a_volume_size_between_sectors_is_refused_400_naming_size(size, tmp_path):
    """RBD would make a volume of any byte count, but qemu and the guest see a disk in whole 512-byte sectors."""
    app = init_app(CephAgentSettings(token="t" * 24, tmp_dir=str(tmp_path)))
    app.cleanup_ctx.remove(ceph_ctx)  # the body is refused before any Ceph call
    auth = {"Authorization": "Bearer " + "t" * 24}
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for path, body in (("/v1/volumes", {"pool": "p", "name": "v", "size": size}),
                           ("/v1/volumes/p/v/resize", {"size": size}),
                           ("/v1/volumes/clone", {"pool": "p", "name": "v", "source": {"pool": "p", "image": "i"},
                                                  "size": size})):
            r = await client.post(path, json=body, headers=auth)
            error = (await r.json())["error"]
            assert (r.status, error["code"], error["field"]) == (400, "invalid", "size"), path
            assert "multiple of 512" in error["message"]
    assert ResizeRequest(size=1 << 30).size == CreateVolumeRequest(pool="p", name="v", size=1 << 30).size
