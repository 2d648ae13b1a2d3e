"""Ports for a run's servers: never the same one twice, never where outgoing connections take theirs."""

from __future__ import annotations

import socket

import pytest

from testbed import ports


@pytest.fixture
def pool(tmp_path, monkeypatch):
    monkeypatch.setattr(ports, "LOCK_FILE", tmp_path / "ports.lock")
    monkeypatch.setattr(ports, "_pool", ports._Pool())
    return ports._pool


def test_ports_are_distinct_and_outside_the_ephemeral_range(pool):
    first, last = (int(n) for n in ports.EPHEMERAL.read_text().split())
    drawn = [ports.free_port() for _ in range(2000)]
    assert len(set(drawn)) == len(drawn)
    assert all(not first <= p <= last for p in drawn)


def test_a_port_something_listens_on_is_never_handed_out(pool, monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setattr(ports, "port_range", lambda: range(port, port + 1))
        with pytest.raises(RuntimeError, match=f"no free port in {port}-{port}"):
            ports.free_port()


def test_the_range_is_the_larger_side_of_the_ephemeral_one(tmp_path, monkeypatch):
    eph = tmp_path / "range"
    monkeypatch.setattr(ports, "EPHEMERAL", eph)
    eph.write_text("32768\t60999\n")
    assert ports.port_range() == range(ports.LOWEST, 32768)
    eph.write_text("1024\t40000\n")
    assert ports.port_range() == range(40001, 65536)


def test_an_exhausted_range_says_so(pool, monkeypatch):
    monkeypatch.setattr(ports, "port_range", lambda: range(20000, 20003))
    assert sorted(ports.free_port() for _ in range(3)) == [20000, 20001, 20002]
    with pytest.raises(RuntimeError, match="no free port in 20000-20002"):
        ports.free_port()


def test_libvirtds_ports_are_never_handed_out(pool, monkeypatch):
    """The test bed's libvirtds listen on them inside the hosts' namespaces, where the agents listen too."""
    monkeypatch.setattr(ports, "port_range", lambda: range(16508, 16516))
    assert sorted(ports.free_port() for _ in range(6)) == [16508, 16510, 16511, 16512, 16513, 16515]
