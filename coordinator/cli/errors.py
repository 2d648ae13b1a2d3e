"""The one error of the `hs` CLI."""

from __future__ import annotations


class CliError(Exception):
    """An expected failure (a bad argument, an unknown name, a failed deploy): printed as one `hs: …` line,
    exit status 1."""
