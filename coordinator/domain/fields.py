"""Field rules shared by the coordinator's records, applied where a value is written (the API's bodies)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from agentkit.addr import check_host_address, check_source_url

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # hosts, networks, VMs, EIPs, storages: also usable on a command line
IFNAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$"  # a Linux network device (not '..', no ':' alias, no option)
_UUID_SHAPED = re.compile(r"^[0-9a-fA-F]{32}$|^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


def _not_uuid_shaped(name: str) -> str:
    """Objects are found by uuid or by name: a name shaped like a uuid could shadow another object."""
    if _UUID_SHAPED.match(name):
        raise ValueError(f"{name!r} looks like a uuid; a name may not (it could shadow another object's uuid)")
    return name


Name = Annotated[str, Field(pattern=NAME), AfterValidator(_not_uuid_shaped)]
IfName = Annotated[str, Field(pattern=IFNAME)]
HostAddress = Annotated[str, Field(min_length=1, max_length=253, description="management IP or DNS name"),
                        AfterValidator(check_host_address)]
Ref = Annotated[str, Field(min_length=1, max_length=128, description="a uuid (or, where objects have names, a name)")]


# Where an image is added from: http(s):// or file:// (where the backup storage's agent allows it)
SourceUrl = Annotated[str, Field(pattern=r"^(https?|file)://[^\s]+$", max_length=4096),
                      AfterValidator(check_source_url)]
