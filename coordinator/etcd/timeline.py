"""Which restore etcd's data comes from: its timeline.

Revisions before a restore and after it are not comparable. `hs-ctl restore` brings etcd back at the
backup's revision, and the restored data's own writes soon pass the revisions that watches and agents
saw before; a revision from before the restore then names a point of the restored history that has
nothing to do with what was seen there (Kubernetes has etcd bump its revision and mark it compacted for
this; etcd 3.4 cannot). So whatever resumes from a revision, a watch or an agent's stream, resumes only
on the timeline it was on, and starts over from a listing or a snapshot on any other.

`hs-ctl restore` writes a new id at `keys.TIMELINE` into the restored data before etcd serves it
(coordinator/ctl/restore.py); data never restored has none (""). An id begins with the restore's UTC
time, so a later restore's id sorts after an earlier one's.
"""

from __future__ import annotations

import datetime as dt
import secrets

from coordinator.etcd import keys

KEY = keys.TIMELINE
ORIGINAL = ""  # the data was never restored


def of(value: object) -> str:
    """The timeline id of the value at `KEY` (None: absent)."""
    found = value.get("id") if isinstance(value, dict) else None
    return found if isinstance(found, str) else ORIGINAL


def new(backup: str, now: dt.datetime) -> dict[str, str]:
    """The value a restore writes: a fresh id, what was restored, when."""
    return {"id": f"{now:%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(4)}", "backup": backup, "at": now.isoformat()}
