"""What a host's agent is told of one etcd revision."""

from __future__ import annotations

from coordinator.domain.hostview import changes
from coordinator.etcd.store import Change


def test_a_revision_becomes_the_puts_and_deletes_in_the_hosts_view():
    batch = [Change("/hs/d/all/l3/n1", {"uuid": "n1"}, 7), Change("/hs/d/host/h1/vm/v1", None, 7),
             Change("/hs/d/host/h2/vm/v2", {"uuid": "v2"}, 7), Change("/hs/ipam/n1/198.18.0.9", {}, 7),
             Change("/hs/d/host/h1/vm/v3", {"uuid": "v3"}, 7), Change("/hs/d/host/h1/vm/v3", None, 7)]
    assert changes("h1", batch) == {"type": "changes", "rev": 7, "puts": {"l3/n1": {"uuid": "n1"}},
                                    "deletes": ["vm/v1", "vm/v3"]}


def test_a_revision_outside_the_view_is_nothing_to_send():
    assert changes("h1", [Change("/hs/d/host/h2/vm/v2", None, 8), Change("/hs/alive/h1", {}, 8)]) is None
