"""Settings of the `imagestore` process: `/etc/hoststack/imagestore.toml` or `HS_IMAGESTORE_<KEY>` variables."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agentkit.config import CommaList
from agentkit.tls import TlsSettings


class ImageStoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # no error echoes the token

    listen: str = Field("0.0.0.0", description="address the HTTP API listens on")  # noqa: S104
    port: int = Field(8744, ge=1, le=65535, description="HTTP API port")
    tls: TlsSettings = Field(TlsSettings(), description="[tls]: the API's certificate (default "
                             "/etc/hoststack/pki/imagestore.pem, issued for this host's address; no sendfile then)")
    token: SecretStr = Field(min_length=16, description="bearer token of the coordinator (manages images); "
                             "read tickets for hosts are signed with a key derived from it")
    metrics_token: SecretStr | None = Field(None, min_length=16, description="scrapers' access to /metrics and "
                                            "/health (the coordinator's `metrics_token`, laid out by deploys); "
                                            "unset: none")
    root: str = Field("/var/lib/hoststack/imagestore", description="directory holding the images "
                      "(images/, partial/, trash/ below it)")
    file_url_roots: CommaList = Field([], description="directories file:// image URLs may read; empty: "
                                      "file:// is refused")
    download_concurrency: int = Field(2, ge=1, description="downloads running at once; others queue")
    retries: int = Field(5, ge=0, le=50, description="times a broken download resumes (HTTP Range) before it "
                         "fails; a MiB of progress resets the count")
    read_timeout: float = Field(300, gt=0, description="seconds in which a source must send a MiB (or its last "
                                "byte) before it counts as broken and is resumed")
    checkpoint_bytes: int = Field(64 << 20, ge=1 << 20, description="bytes between fsyncs of a download "
                                  "(what a power loss may cost; a crashed agent loses nothing)")
    reserve_bytes: int = Field(1 << 30, ge=0, description="free space a download may not eat into")
    max_image_size: int = Field(1 << 40, ge=1 << 20, description="largest image the store takes, in bytes: its "
                                "data, and a qcow2's virtual size (a source's endless body, a 10 TB sparse disk)")
    inspect_timeout: float = Field(120, gt=0, description="seconds `qemu-img info` may take")
    log_level: str = Field("INFO", description="log level")
