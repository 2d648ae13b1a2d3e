"""What each host stream is sent: a revision's lines by host, the resume diff, the snapshot. The model
check plays random revisions and asserts that an agent applying its lines (or a resume diff from any
revision) always holds exactly its view."""

from __future__ import annotations

import json
import random

from coordinator.etcd.store import Change
from coordinator.fanout.history import History
from coordinator.fanout.state import DesiredState
from coordinator.fanout.views import resume, route, snapshot

HOSTS = ["h1", "h2", "h3"]


def lines(state: DesiredState, batch: list[Change], rev: int, hosts=HOSTS) -> dict[str, dict]:
    return {h: json.loads(data) for h, data in route(state.apply(batch, rev), state, hosts)}


def agent_apply(view: dict, doc: dict) -> dict:
    """What agentkit.link does with a line."""
    if doc["type"] == "snapshot":
        return dict(doc["items"])
    view = dict(view)
    for k in doc["deletes"]:
        view.pop(k, None)
    view.update(doc["puts"])
    return view


def test_a_revision_becomes_the_puts_and_deletes_in_each_hosts_view():
    s = DesiredState()
    s.apply([Change("/hs/d/host/h1/vm/v1", {"uuid": "v1"}, 6)], 6)
    batch = [Change("/hs/d/all/l3/n1", {"uuid": "n1"}, 7), Change("/hs/d/host/h1/vm/v1", None, 7),
             Change("/hs/d/host/h2/vm/v2", {"uuid": "v2"}, 7), Change("/hs/ipam/n1/198.18.0.9", {}, 7),
             Change("/hs/d/host/h1/vm/v3", {"uuid": "v3"}, 7), Change("/hs/d/host/h1/vm/v3", None, 7)]
    out = lines(s, batch, 7)
    assert out["h1"] == {"type": "changes", "rev": 7, "puts": {"l3/n1": {"uuid": "n1"}}, "deletes": ["vm/v1", "vm/v3"]}
    assert out["h2"]["puts"] == {"l3/n1": {"uuid": "n1"}, "vm/v2": {"uuid": "v2"}}
    assert out["h3"] == {"type": "changes", "rev": 7, "puts": {"l3/n1": {"uuid": "n1"}}, "deletes": []}


def test_a_revision_outside_a_hosts_view_sends_it_nothing():
    s = DesiredState()
    assert "h1" not in lines(s, [Change("/hs/d/host/h2/vm/v2", None, 8), Change("/hs/alive/h1", {}, 8)], 8)
    assert lines(s, [Change("/hs/alive/h1", {}, 9)], 9) == {}
    assert set(lines(s, [Change("/hs/d/host/h2/vm/v2", {"uuid": "v2"}, 10)], 10)) == {"h2"}


def test_a_cluster_wide_change_is_encoded_once_for_every_host():
    s = DesiredState()
    out = list(route(s.apply([Change("/hs/d/all/config/x", 1, 3)], 3), s, HOSTS))
    assert len(out) == 3 and out[0][1] is out[1][1] is out[2][1]


def test_dns_records_go_only_to_the_hosts_with_that_l3():
    s = DesiredState()
    lines(s, [Change("/hs/d/host/h1/vm/v1", {"nics": [{"l3_uuid": "a"}]}, 2),
              Change("/hs/d/host/h2/vm/v2", {"nics": [{"l3_uuid": "b"}]}, 2)], 2)
    out = lines(s, [Change("/hs/d/all/dns/a/n9", {"name": "x"}, 3)], 3)
    assert out == {"h1": {"type": "changes", "rev": 3, "puts": {"dns/a/n9": {"name": "x"}}, "deletes": []}}
    assert "dns/a/n9" not in json.loads(snapshot(s, "h2"))["items"]


def test_a_vm_landing_brings_its_l3s_records_in_the_same_line_and_leaving_removes_them():
    s = DesiredState()
    lines(s, [Change("/hs/d/all/dns/a/n1", {"name": "one"}, 2), Change("/hs/d/all/dns/a/n2", {"name": "two"}, 2)], 2)
    vm = {"uuid": "v", "nics": [{"l3_uuid": "a"}]}
    out = lines(s, [Change("/hs/d/host/h3/vm/v", vm, 3), Change("/hs/d/all/dns/a/n3", {"name": "v"}, 3)], 3)
    assert out == {"h3": {"type": "changes", "rev": 3, "deletes": [], "puts": {
        "vm/v": vm, "dns/a/n1": {"name": "one"}, "dns/a/n2": {"name": "two"}, "dns/a/n3": {"name": "v"}}}}
    out = lines(s, [Change("/hs/d/host/h3/vm/v", None, 4), Change("/hs/d/all/dns/a/n3", None, 4)], 4)
    assert out["h3"]["puts"] == {} and set(out["h3"]["deletes"]) == {"vm/v", "dns/a/n1", "dns/a/n2", "dns/a/n3"}


def random_batch(rng: random.Random, rev: int) -> list[Change]:
    """A transaction: VMs placed, changed, moved or deleted, DNS records, cluster-wide items."""
    out, used = [], set()
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.5:
            key = f"/hs/d/host/{rng.choice(HOSTS)}/vm/v{rng.randint(1, 6)}"
            nics = [{"l3_uuid": rng.choice("abcd")} for _ in range(rng.randint(0, 2))]
            if nics and rng.random() < 0.2:
                nics[0]["eip"] = {"public_l3_uuid": "pub"}
            value = None if rng.random() < 0.3 else {"nics": nics, "at": rev}
        elif kind < 0.85:
            key = f"/hs/d/all/dns/{rng.choice('abcdpub')}/n{rng.randint(1, 8)}"
            value = None if rng.random() < 0.3 else {"name": f"r{rev}"}
        else:
            key = f"/hs/d/all/l3/{rng.choice('abcd')}"
            value = None if rng.random() < 0.3 else {"at": rev}
        if key not in used:  # etcd: a key once per transaction
            used.add(key)
            out.append(Change(key, value, rev))
    return out


def test_model_agents_following_lines_or_resuming_from_any_revision_hold_their_view():
    rng = random.Random(1515)
    for _ in range(20):
        s, history = DesiredState(), History(capacity=10_000)
        history.reset(1)
        agents = dict.fromkeys(HOSTS, {})
        views = {1: {h: s.view(h) for h in HOSTS}}
        for rev in range(2, 60):
            delta = s.apply(random_batch(rng, rev), rev)
            history.add(rev, delta.touches)
            for host, data in route(delta, s, HOSTS):
                agents[host] = agent_apply(agents[host], json.loads(data))
            views[rev] = {h: s.view(h) for h in HOSTS}
            assert agents == views[rev]
        for since, at in views.items():
            for host in HOSTS:
                data = resume(s, history, host, since)
                held = agent_apply(at[host], json.loads(data)) if data else at[host]
                assert held == s.view(host), (host, since)
