"""The one-cluster rule: mons of one storage must report one fsid; the odd one out is named."""

import pytest

from cephagent.errors import FsidMismatch
from cephagent.fsid import check_same_fsid

A, B = "0f1e2d3c-0000-4000-8000-00000000000a", "0f1e2d3c-0000-4000-8000-00000000000b"


def test_agreeing_mons_give_the_fsid():
    assert check_same_fsid({"root:***@10.0.0.1": A, "root:***@10.0.0.2": A}) == A
    assert check_same_fsid({"10.0.0.1": A}) == A


def test_odd_one_out_is_named_against_the_majority():
    with pytest.raises(FsidMismatch) as e:
        check_same_fsid({"10.0.0.1": A, "10.0.0.2": B, "10.0.0.3": A})
    msg = str(e.value)
    assert f"mon 10.0.0.2 reports fsid {B}" in msg and f"10.0.0.1, 10.0.0.3 report {A}" in msg
    assert e.value.kwargs["odd"] == ["10.0.0.2"] and e.value.field == "mon_urls" and e.value.status == 409


def test_tie_is_decided_by_the_first_mon_listed():
    with pytest.raises(FsidMismatch, match=f"mon 10.0.0.2 reports fsid {B}, but 10.0.0.1 reports {A}"):
        check_same_fsid({"10.0.0.1": A, "10.0.0.2": B})


def test_added_mons_must_match_the_storage():
    assert check_same_fsid({"10.0.0.4": A}, expected=A) == A
    with pytest.raises(FsidMismatch, match=f"mon 10.0.0.4 reports fsid {B}, but the storage's cluster is {A}"):
        check_same_fsid({"10.0.0.4": B}, expected=A)


def test_no_mons_is_a_caller_bug():
    with pytest.raises(ValueError):
        check_same_fsid({})
