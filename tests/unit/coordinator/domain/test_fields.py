"""Field rules where values are written: names that cannot shadow a uuid, Linux device names, host addresses."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from coordinator.domain.fields import HostAddress, IfName, Name


class Fields(BaseModel):
    name: Name = "n"
    ifname: IfName = "eth0"
    address: HostAddress = "198.18.0.2"


@pytest.mark.parametrize("kw", [{"name": "web-1.prod"}, {"name": "0123456789abcdef"}, {"ifname": "eth0.100"},
                                {"ifname": "enp0s3"}, {"ifname": "bond_0"}, {"address": "kvm-1.example.com"}])
def test_ordinary_values_pass(kw):
    Fields.model_validate(kw)


@pytest.mark.parametrize("kw, words", [
    ({"name": "0123456789abcdef0123456789abcdef"}, "looks like a uuid"),
    ({"name": "01234567-89ab-cdef-0123-456789abcdef"}, "looks like a uuid"),
    ({"ifname": ".."}, "should match pattern"),
    ({"ifname": "eth0:1"}, "should match pattern"),
    ({"ifname": "-eth0"}, "should match pattern"),
    ({"ifname": "a" * 16}, "should match pattern"),
    ({"address": "$(reboot);id"}, "neither an IP address nor a DNS name"),
])
def test_values_that_would_do_something_else_are_refused(kw, words):
    with pytest.raises(ValidationError, match=words):
        Fields.model_validate(kw)
