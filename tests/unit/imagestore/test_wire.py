"""The add request: checksums normalised and checked for shape, media types that fit the format."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from imagestore.wire import AddRequest, default_media


def test_checksums_are_lowercase_hex_of_the_right_length():
    req = AddRequest(url="http://x/i", sha256=" " + "AB" * 32 + "\n", md5="cd" * 16)
    assert (req.sha256, req.md5) == ("ab" * 32, "cd" * 16)
    for bad in ({"sha256": "ab" * 31}, {"md5": "zz" * 16}, {"sha256": "cd" * 16}):
        with pytest.raises(ValidationError, match="hex digits"):
            AddRequest(url="http://x/i", **bad)


@pytest.mark.parametrize(("fmt", "media", "ok"), [
    ("auto", "ISO", True), ("iso", "ISO", True), ("qcow2", "ISO", False), ("iso", "RootVolumeTemplate", False),
    ("raw", "DataVolumeTemplate", True), ("qcow2", "RootVolumeTemplate", True),
])
def test_media_types_fit_formats(fmt, media, ok):
    if ok:
        AddRequest(url="http://x/i", format=fmt, media_type=media)
    else:
        with pytest.raises(ValidationError, match=f"media type {media} does not go with format {fmt}"):
            AddRequest(url="http://x/i", format=fmt, media_type=media)


def test_urls_and_defaults():
    with pytest.raises(ValidationError):
        AddRequest(url="ftp://x/i")
    assert AddRequest(url="file:///srv/i").format == "auto"
    assert (default_media("iso"), default_media("qcow2")) == ("ISO", "RootVolumeTemplate")
