"""The storage component's settings: the `[storage]` section of kvmagent's config."""

from __future__ import annotations

from pydantic import BaseModel, Field


class StorageSettings(BaseModel):
    check_interval: float = Field(10, gt=0, description="seconds between mount checks, heartbeats and capacity "
                                  "reports")
    cache_grace: float = Field(3600, ge=0, description="seconds a cached image nothing uses is kept")
    gc_interval: float = Field(600, gt=0, description="seconds between image cache collections")
    fetch_stall: float = Field(60, gt=0, description="seconds without data before a download is retried")
    fetch_retries: int = Field(3, ge=1, description="tries of one download (each resumes the last) per pass")
    migrate_retry: float = Field(10, gt=0, description="seconds before a volume migration's failed copy is "
                                 "resumed (the source may be restarting)")
