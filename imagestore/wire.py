"""JSON models of the image store's HTTP API, shared by the agent and its client (no I/O here).

Sizes are bytes. An image's id is the coordinator's uuid of it; `url` is shown without credentials
or query. `sha256` is known once an image is ready; `md5` (the seeds' checksum) too when the request had
one to check, else shortly after (it is computed from the ready file, not during the download).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agentkit import SESSION_PATTERN

ImageId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
DeclaredFormat = Literal["auto", "qcow2", "raw", "iso"]
Format = Literal["qcow2", "raw", "iso"]
MediaType = Literal["RootVolumeTemplate", "DataVolumeTemplate", "ISO"]
State = Literal["downloading", "ready", "failed"]
DIGEST_LENGTHS = {"sha256": 64, "md5": 32}


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddRequest(Wire):
    """What `PUT /v1/images/{id}` takes; the same request again is a no-op, another one a conflict. An
    uploaded image (`PUT /v1/images/{id}/data`) records `upload://<uploader>` as its URL."""

    url: Annotated[str, Field(pattern=r"^(https?|file|upload)://", max_length=4096)]
    format: DeclaredFormat = "auto"
    media_type: MediaType | None = None
    sha256: str | None = None
    md5: str | None = None

    @field_validator("sha256", "md5")
    @classmethod
    def _hex_digest(cls, v: str | None, info: ValidationInfo) -> str | None:
        name = info.field_name or ""
        if v is None:
            return None
        v = v.strip().lower()
        if len(v) != DIGEST_LENGTHS[name] or any(c not in "0123456789abcdef" for c in v):
            raise ValueError(f"{name} must be {DIGEST_LENGTHS[name]} hex digits")
        return v

    @model_validator(mode="after")
    def _media_fits_format(self) -> AddRequest:
        if self.media_type is not None:
            check_media(self.format, self.media_type)
        return self


def check_media(fmt: str, media_type: str) -> None:
    """ISO media are iso data; volume templates are disks (qcow2 or raw); `auto` is decided later."""
    if fmt == "auto":
        return
    if (media_type == "ISO") != (fmt == "iso"):
        raise ValueError(f"media type {media_type} does not go with format {fmt}")


def default_media(fmt: str) -> MediaType:
    return "ISO" if fmt == "iso" else "RootVolumeTemplate"


class Progress(Wire):
    phase: Literal["queued", "download", "inspect", "verify", "done"]
    done: int = 0
    total: int | None = None

    @property
    def percent(self) -> float | None:
        return round(100 * self.done / self.total, 1) if self.total else None


class ErrorInfo(Wire):
    code: str
    message: str


class ImageInfo(Wire):
    """An image as the store has it; `format`/`media_type` are the declared ones until it is ready."""

    id: str
    state: State
    url: str
    format: DeclaredFormat
    media_type: MediaType | None
    size: int | None = None
    virtual_size: int | None = None
    actual_size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    progress: Progress | None = None
    percent: float | None = None
    error: ErrorInfo | None = None
    created_at: float | None = None


class Capacity(Wire):
    """The store's filesystem (`total`, `available` to us) and what images use of it (allocated bytes)."""

    total: int
    available: int
    used: int
    images: int
    downloading: int


class Health(Wire):
    status: Literal["ok"]
    version: str
    session: str | None = Field(None, pattern=SESSION_PATTERN)  # agentkit.SESSION; None: a store older than sessions
    root: str  # the directory of images (an ImageStore backup storage's path)
    capacity: Capacity
