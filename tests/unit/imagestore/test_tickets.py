"""Read tickets: one image, until they expire, for whoever the coordinator minted them; nothing forged."""

from __future__ import annotations

import pytest

from imagestore.tickets import MAX_TTL, BadTicket, Ticket, mint, ticket_key, verify

KEY = ticket_key("t" * 24)


def test_a_ticket_reads_its_image_until_it_expires_give_or_take_the_clocks_skew():
    ticket, expires = mint(KEY, "host:h1", "img1", 60, now=1000)
    assert expires == 1060 and ticket.startswith("hsr1.")
    assert verify(KEY, ticket, "img1", now=1059) == Ticket("host:h1", "img1", 1060)
    verify(KEY, ticket, "img1", now=1360)  # the store's clock five minutes ahead of the coordinator's
    with pytest.raises(BadTicket, match="expired at 1060, 301 s ago"):
        verify(KEY, ticket, "img1", now=1361)
    far, _ = mint(KEY, "host:h1", "img1", MAX_TTL, now=1000)
    verify(KEY, far, "img1", now=700)  # five minutes behind
    with pytest.raises(BadTicket, match="clock is behind the coordinator's"):
        verify(KEY, far, "img1", now=699)


def test_a_ticket_is_for_one_image():
    ticket, _ = mint(KEY, "host:h1", "img1", 60)
    with pytest.raises(BadTicket, match="it is for image img1, not img2"):
        verify(KEY, ticket, "img2")


@pytest.mark.parametrize("mangle", [
    lambda t: t.replace("hsr1", "hsr2", 1),
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
    lambda t: t.rsplit(".", 1)[0],
    lambda t: "hsr1.!!!.???",
    lambda t: "t" * 24,
])
def test_forged_or_malformed_tickets_are_refused(mangle):
    ticket, _ = mint(KEY, "host:h1", "img1", 60)
    with pytest.raises(BadTicket):
        verify(KEY, mangle(ticket), "img1")


def test_a_changed_claim_breaks_the_signature():
    ticket, _ = mint(KEY, "host:h1", "img1", 60)
    other, _ = mint(KEY, "host:h1", "img2", 60)
    forged = ".".join([ticket.split(".")[0], other.split(".")[1], ticket.split(".")[2]])
    with pytest.raises(BadTicket, match="signature does not match"):
        verify(KEY, forged, "img2")


def test_another_token_means_another_key():
    ticket, _ = mint(ticket_key("u" * 24), "host:h1", "img1", 60)
    assert ticket_key("u" * 24) != KEY
    with pytest.raises(BadTicket, match="signature"):
        verify(KEY, ticket, "img1")


def test_ttl_is_bounded():
    with pytest.raises(ValueError, match="ttl"):
        mint(KEY, "host:h1", "img1", 0)
    with pytest.raises(ValueError, match="ttl"):
        mint(KEY, "host:h1", "img1", 8 * 24 * 3600)
