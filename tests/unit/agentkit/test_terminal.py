"""Text from elsewhere printed on an operator's terminal."""

from __future__ import annotations

import pytest

from agentkit.terminal import printable


@pytest.mark.parametrize("text, limit, want", [
    ("apt: paquet « qemu » introuvable", 1000, "apt: paquet « qemu » introuvable"),  # printable text as it is
    ("\x1b[2J\x1b]0;t\x07\r\n\t\u200b\x9b", 1000, "\\x1b[2J\\x1b]0;t\\x07\\r\\n\\t\\u200b\\x9b"),
    ("x" * 20, 10, "x" * 7 + "..."),
    ("x" * 2000, None, "x" * 2000),  # no limit unless asked
])
def test_printable_escapes_what_a_terminal_would_act_on_and_bounds_the_length(text, limit, want):
    assert printable(text, limit) == want
