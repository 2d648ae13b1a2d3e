"""The observed intake: each kind's body checked before it is stored."""

from __future__ import annotations

from typing import Any

import pytest

from agentkit.errors import Invalid
from agentkit.model import ObservedBatch, ObservedEvent
from coordinator.domain.observed import check

VM = {"state": "Running", "console": {"protocol": "vnc", "kinds": ["vnc", "serial"]},
      "boot_order": ["HardDisk"]}
LEASE = {"state": "bound", "vm_uuid": "v1", "l3_uuid": "l1", "mac": "fa:16:3e:00:00:01", "ip": "198.18.0.5"}


def event(seq: int, kind: str = "vm", ident: str = "v1", body: dict[str, Any] | None = None) -> ObservedEvent:
    return ObservedEvent(seq=seq, kind=kind, id=ident, body=VM if body is None else body, at=1.0)


def test_what_the_agents_report_passes():
    check(ObservedBatch(events=[event(1), event(2, "lease", "n1", LEASE), event(3, body={"state": "Destroyed"}),
                                event(4, body={**VM, "drift": True, "generation": 3, "error": "x"}),
                                event(5, body={**VM, "reboot_seq": 2, "installed": True, "generation": 4})]))


@pytest.mark.parametrize("kind, body, field", [
    ("lease", {"state": "bound"}, "events.0.body.vm_uuid"),
    ("lease", {**LEASE, "ip": "198.18.0.256"}, "events.0.body.ip"),
    ("lease", {**LEASE, "mac": "not-a-mac"}, "events.0.body.mac"),
    ("vm", {**VM, "state": "Exploded"}, "events.0.body.state"),
    ("vm", {**VM, "console": {"protocol": "vnc", "kinds": ["rdp"]}}, "events.0.body.console.kinds.0"),
    ("vm", {**VM, "console": {"protocol": "rdp", "kinds": ["vnc"]}}, "events.0.body.console.protocol"),
    ("vm", {**VM, "generation": 1.5}, "events.0.body.generation"),
    ("vm", {**VM, "surprise": 1}, "events.0.body.surprise"),
    ("evil", {}, "events.0.kind"),
])
def test_a_body_that_could_not_be_read_back_is_refused_naming_it(kind, body, field):
    with pytest.raises(Invalid) as e:
        check(ObservedBatch(events=[event(1, kind, body=body)]))
    assert e.value.field == field and e.value.status == 400
