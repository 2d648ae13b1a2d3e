"""Host facts reported on connect."""

from __future__ import annotations

from kvmagent.facts import gather


def test_facts_of_this_host():
    facts = gather("198.18.0.5", {"libvirt": "9.0.0"})
    assert facts.address == "198.18.0.5" and facts.cpus > 0 and facts.memory_mb > 0
    assert facts.versions == {"libvirt": "9.0.0"}
