"""Reports only on change; moving figures alone at most once per quiet period."""

from __future__ import annotations

from kvmagent.storage.reports import Reports


def test_changes_are_sent_old_news_and_mere_figures_are_not():
    sent, now = [], [0.0]
    r = Reports(lambda kind, ident, body: sent.append(body), quiet=60, clock=lambda: now[0])
    assert r.send("storage", "a", {"state": "Ready", "capacity": {"used": 1}})
    assert not r.send("storage", "a", {"state": "Ready", "capacity": {"used": 1}})
    assert not r.send("storage", "a", {"state": "Ready", "capacity": {"used": 2}})
    assert r.send("storage", "a", {"state": "Unavailable", "capacity": None})  # a real change: at once
    now[0] = 61.0
    assert r.send("storage", "a", {"state": "Unavailable", "capacity": {"used": 3}})
    assert len(sent) == 3
