"""kvmagent's expected failures are HostStack domain errors: the pipeline retries them, never crashes."""

from __future__ import annotations

from agentkit.errors import HostStackError
from kvmagent.errors import BridgeError, DataplaneError, DriverError, KvmAgentError, NoDomain, SpecError


def test_every_kvmagent_error_is_a_domain_error_with_a_code():
    for cls in (DriverError, NoDomain, BridgeError, SpecError, DataplaneError):
        assert issubclass(cls, KvmAgentError) and issubclass(cls, HostStackError)
    err = NoDomain("lookup x: domain not found", 42)
    assert isinstance(err, DriverError) and err.libvirt_code == 42
    assert err.body() == {"error": {"code": "no_domain", "message": "lookup x: domain not found", "field": None}}
