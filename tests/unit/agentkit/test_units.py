"""Byte counts in the largest binary unit they reach."""

from agentkit.units import binary


def test_sizes_read_as_people_write_them():
    assert [binary(n) for n in (0, 512, 1536, 256 << 20, 10 << 30, (1 << 30) + (1 << 29), 3 << 60)] == [
        "0 B", "512 B", "1.5 KiB", "256 MiB", "10 GiB", "1.5 GiB", "3072 PiB"]
