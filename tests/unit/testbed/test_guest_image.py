"""testbed.guest_image's pure parts: the ELF inside a compressed kernel image, the kernel command line."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import pytest

from testbed.guest_image import GuestImage, extract_elf

ELF = b"\x7fELF" + bytes(range(256)) * 8


@pytest.mark.parametrize("compress", [lzma.compress, gzip.compress], ids=["xz", "gzip"])
def test_the_elf_payload_is_found_behind_the_setup_code(compress):
    payload = compress(ELF)
    magic = payload[:3]
    # setup code that happens to contain the magic too: a false start is skipped
    bzimage = b"MZ" + bytes(100) + magic + b"not a stream" + bytes(50) + payload + bytes(64)
    assert extract_elf(bzimage) == ELF


def test_a_compressed_payload_that_is_not_elf_is_refused():
    with pytest.raises(RuntimeError, match="no xz/gzip ELF payload"):
        extract_elf(b"MZ" + gzip.compress(b"just text") + lzma.compress(b"more text"))


def test_cmdline_says_what_the_guest_does():
    image = GuestImage(Path("k"), Path("i"), Path("d"), Path("iso"))
    assert image.cmdline() == "console=ttyS0 panic=-1 quiet hsaction=poweroff"
    assert image.cmdline("hold", "hsboot=disk") == "console=ttyS0 panic=-1 quiet hsaction=hold hsboot=disk"
