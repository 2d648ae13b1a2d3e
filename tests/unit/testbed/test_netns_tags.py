"""Parallel test sessions never share a run tag: a tag is claimed by creating its run directory."""

from __future__ import annotations

import os

from testbed import netns


def test_a_tag_in_use_is_never_handed_out_again(tmp_path, monkeypatch):
    monkeypatch.setattr(netns, "RUN_ROOT", tmp_path)
    (tmp_path / "hsbeef").mkdir()  # another session's run
    draws = iter(["beef", "beef", "cafe"])
    monkeypatch.setattr(netns.secrets, "token_hex", lambda n: next(draws))
    assert netns._claim_tag() == "cafe"
    assert (tmp_path / "hscafe" / "owner.pid").read_text() == str(os.getpid())
    assert (tmp_path / "hscafe" / "owner.started").read_text() == str(netns.start_time(os.getpid()))
