"""The live view of a storage: each mon's state and why, capacity and pool figures, and the records alone
when the agents were not asked."""

from __future__ import annotations

from cephagent.client import AgentUnreachable
from cephagent.wire import ClusterInfo
from coordinator.domain.ceph.records import MonRecord, StorageRecord
from coordinator.domain.ceph.views import describe

from .standin import FSID, cluster


def mon(host: str, port: int = 6789) -> MonRecord:
    return MonRecord(host=host, mon_port=port, ssh_port=22, ssh_username="root", ssh_password="x")


def test_mon_states_say_why_a_mon_is_disconnected():
    rec = StorageRecord(uuid="u", name="bs1", kind="bs", zone="default", fsid=FSID, pools={"image": "p"},
                        mons=[mon("127.0.0.1"), mon("127.0.0.1", 6790), mon("127.0.0.2"), mon("127.0.0.3"),
                              mon("127.0.0.4")], created_at=1)
    in_quorum = [{"name": "a", "rank": 0, "addr": "127.0.0.1:6789", "addrs": ["127.0.0.1:6789"], "in_quorum": True},
                 {"name": "d", "rank": 1, "addr": "127.0.0.4:6789", "addrs": ["127.0.0.4:6789"], "in_quorum": False}]
    ours = ClusterInfo.model_validate(cluster(mons=in_quorum))
    survey = {"127.0.0.1": ours, "127.0.0.2": ClusterInfo.model_validate(cluster("other")), "127.0.0.4": ours,
              "127.0.0.3": AgentUnreachable(url="http://127.0.0.3:8742", reason="refused")}
    view = describe(rec, survey)
    states = [(m.status, m.in_quorum, m.mon_name, m.reason) for m in view.mons]
    assert states == [
        ("Connected", True, "a", None),
        ("Disconnected", False, None, "no mon of the cluster listens on 127.0.0.1:6790"),
        ("Disconnected", None, None, f"its cephagent reports fsid other, not the storage's {FSID}"),
        ("Disconnected", None, None, "cephagent at http://127.0.0.3:8742 did not answer: refused"),
        ("Disconnected", False, "d", "not in quorum"),
    ]
    assert (view.status, view.health, view.capacity.model_dump()) == (
        "Connected", "HEALTH_OK", {"total": 100, "available": 60, "used": 40})
    assert view.pools[0].model_dump() == {"role": "image", "name": "p", "total": 5, "available": 3, "used": 2,
                                          "stored": 1, "objects": 1}
    assert view.mons[0].url == "root:***@127.0.0.1:22/?monPort=6789"


def test_without_answers_only_the_records_are_shown():
    rec = StorageRecord(uuid="u", name="ps1", kind="ps", zone="z", fsid=FSID, pools={"rootVolume": "r"},
                        mons=[mon("127.0.0.1")], ceph_user="hsvms", secret_uuid="s", created_at=1)
    view = describe(rec, None)
    assert (view.type, view.status, view.health, view.capacity, view.ceph_user) == (
        "CephPrimaryStorage", None, None, None, "hsvms")
    assert view.mons[0].status is None and view.pools[0].total is None
    nobody = describe(rec, {"127.0.0.1": AgentUnreachable(url="u", reason="r")})
    assert (nobody.status, nobody.capacity) == ("Disconnected", None)
