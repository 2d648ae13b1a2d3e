"""Text from elsewhere (a host, an agent, a stored record) made safe to print on an operator's terminal."""

from __future__ import annotations


def printable(text: str, limit: int | None = None) -> str:
    """`text` with every character that is not printable (an escape sequence's ESC, a carriage return, ...) as its
    Python escape, so that it cannot drive the terminal it is printed on; cut to `limit` characters if given."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."
