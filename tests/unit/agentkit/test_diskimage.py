"""Formats are told by the data: magic numbers, the qcow2 header read by us before qemu-img opens it."""

from __future__ import annotations

import struct

import pytest

from agentkit.diskimage import HEAD_SIZE, ImageRejected, check_declared, check_qcow2_header, detect, is_zero


def qcow2(version: int = 3, backing: int = 0, crypt: int = 0, incompatible: int = 0) -> bytes:
    head = bytearray(HEAD_SIZE)
    struct.pack_into(">4sIQIIQI", head, 0, b"QFI\xfb", version, backing, 0, 16, 1 << 26, crypt)
    struct.pack_into(">Q", head, 72, incompatible)
    return bytes(head)


def iso() -> bytes:
    head = bytearray(HEAD_SIZE)
    head[0x8001:0x8006] = b"CD001"
    return bytes(head)


@pytest.mark.parametrize(("head", "fmt"), [
    (qcow2(), "qcow2"), (iso(), "iso"), (bytes(HEAD_SIZE), "raw"), (b"\xeb\x3c\x90mkfs.fat" + bytes(4000), "raw"),
    (b"KDMV" + bytes(100), "vmdk"), (b"# Disk DescriptorFile\n", "vmdk"), (b"vhdxfile", "vhdx"),
    (bytes(0x40) + b"\x7f\x10\xda\xbe", "vdi"), (b"LUKS\xba\xbe", "luks"), (b"QED\x00", "qed"),
])
def test_detect(head, fmt):
    assert detect(head) == fmt


@pytest.mark.parametrize(("head", "declared", "used"), [
    (qcow2(), "auto", "qcow2"), (qcow2(version=2), "qcow2", "qcow2"), (iso(), "auto", "iso"),
    (iso(), "iso", "iso"), (iso(), "raw", "raw"), (bytes(HEAD_SIZE), "raw", "raw"), (bytes(512), "auto", "raw"),
])
def test_declared_formats_the_data_agrees_with(head, declared, used):
    assert check_declared(head, declared) == used


@pytest.mark.parametrize(("head", "declared", "why"), [
    (bytes(HEAD_SIZE), "qcow2", "declared format qcow2, but the data is not a qcow2 or iso image"),
    (qcow2(), "raw", "declared format raw, but the data is a qcow2 image"),
    (bytes(HEAD_SIZE), "iso", "declared format iso"),
    (qcow2(), "iso", "declared format iso, but the data is a qcow2 image"),
    (b"KDMV" + bytes(100), "auto", "the data is a vmdk image; accepted formats are qcow2, raw and iso"),
    (b"KDMV" + bytes(100), "raw", "the data is a vmdk image"),
    (qcow2(backing=0x1000), "auto", "backing file"),
])
def test_declared_formats_the_data_disagrees_with(head, declared, why):
    with pytest.raises(ImageRejected, match=why):
        check_declared(head, declared)


@pytest.mark.parametrize(("head", "why"), [
    (qcow2(backing=512), "with a backing file"),
    (qcow2(version=2, backing=512), "with a backing file"),
    (qcow2(crypt=1), "encrypted"),
    (qcow2(incompatible=1 << 2), "external data file"),
    (qcow2(incompatible=1 << 1), "marked corrupt"),
    (qcow2(incompatible=1 << 9), "unknown qcow2 incompatible features 0x200"),
    (qcow2(version=4), "version 4"),
    (qcow2()[:100], "truncated"),
])
def test_qcow2_headers_naming_other_files_or_unreadable_are_refused(head, why):
    with pytest.raises(ImageRejected, match=why):
        check_qcow2_header(head)


def test_dirty_and_compression_type_qcow2_are_fine():
    check_qcow2_header(qcow2(incompatible=1 | 1 << 3 | 1 << 4))


def test_is_zero():
    assert is_zero(b"") and is_zero(bytes(4 << 20)) and is_zero(bytes(100))
    assert not is_zero(b"\0" * 50 + b"\1" + b"\0" * 50) and not is_zero(bytes(4 << 20)[:-1] + b"\1")
