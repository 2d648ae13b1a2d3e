"""The host's desired state split by kind."""

from __future__ import annotations

from agentkit.model import Held
from kvmagent.view import HostView


def test_stream_keys_are_split_by_kind_and_unknown_kinds_are_dropped():
    view = HostView.from_state({"l2/a": 1, "l3/b": 2, "vm/c": 3, "dns/d/e": 4, "config/x.y": 5, "cephsecret/f": 6,
                                "future/z": 7}, 9)
    assert (view.rev, view.l2s, view.l3s, view.vms) == (9, {"a": 1}, {"b": 2}, {"c": 3})
    assert (view.dns, view.configs, view.cephsecrets) == ({"d/e": 4}, {"x.y": 5}, {"f": 6})


def test_held_items_are_apart_from_their_kind_and_named_by_kind():
    view = HostView.from_state({"vm/a": 1, "vm/b": Held("bad"), "l2/c": Held("worse"), "dns/d/e": Held("x")}, 3)
    assert view.vms == {"a": 1} and view.l2s == {} and view.dns == {}
    assert view.held == {"vm/b": Held("bad"), "l2/c": Held("worse"), "dns/d/e": Held("x")}
    assert (view.held_of("vm"), view.held_of("l2"), view.held_of("dns"), view.held_of("l3")) == (
        {"b"}, {"c"}, {"d/e"}, set())
