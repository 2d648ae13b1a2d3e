"""A volume's record: the files it is made of, kept in its own directory next to them.

The record is the truth about a volume for every host that mounts the storage (and for an agent that
restarts): which file is active (what a VM opens), which file each snapshot froze, and each file's
parent. It is replaced atomically (a temporary file renamed over it, then the directory synced), only
after the files it describes are complete, so a crash leaves the old record or the new one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from agentkit.durable import write_atomic
from kvmagent.errors import StorageError

FILE_ID = re.compile(r"^f[0-9]{1,9}$")  # how volumes name their files (`new_file_id`)


class VolumeRecord(BaseModel):
    uuid: str
    storage_uuid: str
    image_uuid: str | None = None
    image_format: str | None = None
    files: dict[str, str | None] = Field(description="file id -> parent file id; None: the base file (over the "
                                         "image, if any)")
    active: str
    snapshots: dict[str, str] = Field({}, description="snapshot uuid -> the file it froze")
    snapshot_seq: dict[str, int] = Field({}, description="snapshot uuid -> the request sequence it answered")
    revert_seq: int = 0
    size_bytes: int
    next_file: int = 1

    def children(self, file_id: str) -> list[str]:
        return sorted(f for f, parent in self.files.items() if parent == file_id)

    def new_file_id(self) -> str:
        return f"f{self.next_file}"


def load(path: Path) -> VolumeRecord | None:
    """The record at `path`; None when there is none (the volume is not made yet)."""
    try:
        return VolumeRecord.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as e:
        raise StorageError(f"volume record {path} is unreadable: {e}") from e


def save(path: Path, record: VolumeRecord) -> None:
    """Replace the record atomically and durably."""
    write_atomic(path, json.dumps(record.model_dump(), indent=1, sort_keys=True).encode())



