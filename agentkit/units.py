"""Byte counts as people read them, the same in the CLI's tables and in the coordinator's messages."""

from __future__ import annotations

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def binary(n: float) -> str:
    """`n` bytes in the largest binary unit it reaches, to one decimal where that is not a whole number."""
    value, unit = float(n), UNITS[0]
    for unit in UNITS:
        if abs(value) < 1024 or unit == UNITS[-1]:
            break
        value /= 1024
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"
