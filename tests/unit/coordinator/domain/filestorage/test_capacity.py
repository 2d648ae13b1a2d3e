"""Capacity rules: reserved + asked within total x over-provisioning, refusals naming storage and figures."""

from __future__ import annotations

import json

import pytest

from coordinator.domain.errors import InsufficientCapacity
from coordinator.domain.filestorage.capacity import Scope
from coordinator.domain.filestorage.records import FileStorageRecord
from coordinator.etcd.store import Txn

MiB = 1 << 20
PS = FileStorageRecord(uuid="ps1", name="small", type="LocalStorage", url="/ps", created_at=0)


def scope(reserved: int, total: int = 256 * MiB) -> Scope:
    return Scope(PS, "h1", " on host kvm1", total, reserved, None)


def test_what_fits_is_admitted_and_over_provisioning_stretches_it():
    scope(200 * MiB).admit(56 * MiB, 1.0)
    scope(200 * MiB).admit(300 * MiB, 2.0)
    with pytest.raises(InsufficientCapacity) as e:
        scope(200 * MiB).admit(56 * MiB + 1, 1.0)
    assert e.value.field == "size" and e.value.status == 409 and e.value.code == "insufficient_capacity"
    assert str(e.value) == (f"primary storage small on host kvm1 cannot take 56 MiB ({56 * MiB + 1} bytes): "
                            f"56 MiB ({56 * MiB} bytes) of 256 MiB left (capacity {256 * MiB} bytes x "
                            f"over-provisioning 1, {200 * MiB} bytes reserved)")


def test_a_reservation_is_guarded_and_never_negative():
    txn = Txn()
    scope(10).reserve(txn, -100)
    put = txn.ops[0].request_put
    assert len(txn.compares) == 1 and txn.compares[0].key == b"/hs/psreserved/ps1/h1"
    assert (put.key, json.loads(put.value)) == (b"/hs/psreserved/ps1/h1", {"bytes": 0})

