"""IMDSv2 session tokens: bound to a NIC, valid until their expiry, worthless in another process."""

from __future__ import annotations

from flatnet.metadata.tokens import TokenSigner


def test_tokens_are_bound_to_a_nic_and_expire():
    now = [1000.0]
    signer = TokenSigner(21600, clock=lambda: now[0])
    token = signer.issue("nic-a", ttl=10)
    assert signer.valid(token, "nic-a")
    assert not signer.valid(token, "nic-b")
    assert not signer.valid(token[:-2] + "AA", "nic-a")
    assert not signer.valid("!!not base64!!", "nic-a")
    assert not TokenSigner(21600, clock=lambda: now[0]).valid(token, "nic-a")  # other process, other secret
    now[0] += 11
    assert not signer.valid(token, "nic-a")
