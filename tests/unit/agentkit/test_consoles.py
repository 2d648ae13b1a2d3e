"""Tunnel tickets: issued by the coordinator with the digest of a host's token, checked offline by its agent."""

from __future__ import annotations

import pytest

from agentkit.consoles import (
    TICKET_LIFETIME,
    TicketRefused,
    check_ticket,
    is_token,
    issue_ticket,
    new_token,
    websocket_url,
)
from agentkit.tickets import SKEW, host_key

KEY = host_key("host-token-of-kvm1")


def test_a_ticket_opens_one_console_of_one_vm_until_it_expires_give_or_take_the_clocks_skew():
    ticket = issue_ticket(KEY, "vm1", "vnc", 1000)
    check_ticket(KEY, "vm1", "vnc", ticket, now=999.5)
    for vm, kind in (("vm2", "vnc"), ("vm1", "serial")):
        with pytest.raises(TicketRefused, match="not issued for"):
            check_ticket(KEY, vm, kind, ticket, now=999)
    check_ticket(KEY, "vm1", "vnc", ticket, now=1000 + SKEW)  # a host five minutes ahead of the coordinator
    with pytest.raises(TicketRefused, match="expired 301 s ago by this host's clock"):
        check_ticket(KEY, "vm1", "vnc", ticket, now=1301)
    check_ticket(KEY, "vm1", "vnc", ticket, now=1000 - TICKET_LIFETIME - SKEW)  # five minutes behind, just issued
    with pytest.raises(TicketRefused, match="this host's clock is behind the coordinator's by more than 300 s"):
        check_ticket(KEY, "vm1", "vnc", ticket, now=639)  # not honoured for as long as the clock lags


@pytest.mark.parametrize("ticket", ["", "x.y", "1000", "-5.abc", "9" * 20 + ".00", "1000.é", "².abc"])
def test_malformed_or_forged_tickets_are_refused(ticket):
    with pytest.raises(TicketRefused):
        check_ticket(KEY, "vm1", "vnc", ticket, now=0)


def test_another_hosts_key_or_a_later_expiry_does_not_verify():
    ticket = issue_ticket(KEY, "vm1", "vnc", 1000)
    with pytest.raises(TicketRefused):
        check_ticket(host_key("another-host"), "vm1", "vnc", ticket, now=0)
    with pytest.raises(TicketRefused):  # the expiry is covered by the MAC
        check_ticket(KEY, "vm1", "vnc", "2000." + ticket.split(".")[1], now=0)


def test_a_console_pages_websocket_is_its_path_and_token_over_ws():
    token = "Ab-_9x"  # secrets.token_urlsafe
    assert websocket_url(f"https://10.0.0.5:8743/consoles/vm1/spice?token={token}") == \
        f"wss://10.0.0.5:8743/consoles/vm1/spice/ws?token={token}"
    assert websocket_url("http://[fd00::5]:8743/consoles/vm1/vnc?token=t") == "ws://[fd00::5]:8743/consoles/vm1/vnc/ws?token=t"


def test_every_token_has_the_one_shape_the_proxy_admits():
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200 and all(is_token(t) for t in tokens)  # leading/trailing "-" and "_" too
    t = tokens.pop()
    for other in ("", t[:42], t + "A", t[:42] + "=", t[:42] + "é", t[:42] + "\n", " " + t[1:]):
        assert not is_token(other), other
