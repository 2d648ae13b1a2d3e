"""flatnet's errors: one base under agentkit's HostStackError, a code each, messages built from their fields."""

from __future__ import annotations

import pytest

from agentkit.errors import HostStackError
from flatnet.errors import EipError, FlatnetError, MetadataError, NamespaceError, NftError


@pytest.mark.parametrize("cls, code", [(NamespaceError, "namespace_unavailable"), (NftError, "nft_unavailable"),
                                       (EipError, "eip_unavailable"), (MetadataError, "metadata_unavailable")])
def test_every_error_is_a_flatnet_error_with_its_own_code(cls, code):
    assert issubclass(cls, FlatnetError) and issubclass(cls, HostStackError)
    assert cls.code == code and cls.status == 503


def test_messages_name_what_failed_and_keep_the_fields():
    e = NamespaceError(netns="hsf12345678", reason="bridge br0 does not exist (yet)")
    assert str(e) == "namespace hsf12345678: bridge br0 does not exist (yet)"
    assert e.kwargs == {"netns": "hsf12345678", "reason": "bridge br0 does not exist (yet)"}
    assert NftError(table="bridge t", netns="-", reason="x").body() == {
        "error": {"code": "nft_unavailable", "message": "nft table bridge t in -: x", "field": None}}
    assert str(EipError("bridge hsbrpub does not exist (yet)")) == "bridge hsbrpub does not exist (yet)"
