"""Field rules shared by the coordinator's records."""

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # hosts, networks, VMs, EIPs, storages: also usable on a command line
IFNAME = r"^[A-Za-z0-9_.:-]{1,15}$"  # a Linux network device


def _url_parts(v: str) -> str:
    parts = urlsplit(v)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise ValueError(f"not a URL: {e}") from None
    if parts.scheme != "file" and not parts.hostname:
        raise ValueError("an http(s) URL needs a host")
    return v


# Where an image is added from: http(s):// or file:// (where the backup storage's agent allows it)
SourceUrl = Annotated[str, Field(pattern=r"^(https?|file)://[^\s]+$", max_length=4096), AfterValidator(_url_parts)]
