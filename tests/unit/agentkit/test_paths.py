"""Paths from outside: the coordinator checks the text, the agent the real file (symlinks resolved)."""

from __future__ import annotations

import os

import pytest

from agentkit.paths import PathOutside, check, confine

ROOTS = ["/var/lib/hoststack", "/srv/isos/"]


@pytest.mark.parametrize("path", ["vols/root.qcow2", "root.qcow2", "/var/lib/hoststack/v/a.qcow2",
                                  "/srv/isos/install.iso"])
def test_normalised_relative_or_rooted_paths_pass(path):
    assert check(path, ROOTS, "f") == path


@pytest.mark.parametrize("path, words", [
    ("../../../../etc/shadow", "not a normalised path"),
    ("..", "not a normalised path"),
    ("vols/../../x", "not a normalised path"),
    ("/var/lib/hoststack/../../etc/shadow", "not a normalised path"),
    ("./a", "not a normalised path"),
    ("a//b", "not a normalised path"),
    ("//etc/shadow", "not a normalised path"),
    ("/var/lib/hoststack/", "not a normalised path"),
    ("/etc/shadow", "outside the allowed directories"),
    ("/var/lib/hoststack", "outside the allowed directories"),  # the root itself is no file in it
    ("/var/lib/hoststackx/a", "outside the allowed directories"),
])
def test_anything_else_is_refused_naming_the_field(path, words):
    with pytest.raises(PathOutside, match=words) as e:
        check(path, ROOTS, "kernel.kernel")
    assert (e.value.field, e.value.status, e.value.code) == ("kernel.kernel", 400, "path_outside")


def test_the_agent_follows_symlinks_before_it_decides(tmp_path):
    vols, isos, outside = tmp_path / "vols", tmp_path / "isos", tmp_path / "etc"
    for d in (vols, isos, outside):
        d.mkdir()
    (outside / "shadow").write_text("x")
    os.symlink(outside / "shadow", vols / "evil.qcow2")
    os.symlink(outside, isos / "dir")
    assert confine("a/root.qcow2", str(vols), [str(isos)]) == str(vols / "a/root.qcow2")
    assert confine(str(isos / "x.iso"), str(vols), [str(isos)]) == str(isos / "x.iso")
    for path in ("evil.qcow2", str(isos / "dir/shadow"), "../etc/shadow", str(outside / "shadow")):
        with pytest.raises(PathOutside, match="outside"):
            confine(path, str(vols), [str(isos)])
