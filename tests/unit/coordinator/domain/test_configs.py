"""Global configs: only declared names, only their allowed values."""

from __future__ import annotations

import pytest

from agentkit.errors import Invalid, NotFound
from coordinator.domain import configs


def test_a_declared_value_is_accepted():
    assert configs.check("kvm", "vm.cacheMode", "writethrough") == "kvm.vm.cacheMode"


def test_an_unknown_config_or_value_is_refused():
    with pytest.raises(NotFound, match="global config kvm.vm.nope does not exist"):
        configs.check("kvm", "vm.nope", "x")
    with pytest.raises(Invalid) as e:
        configs.check("kvm", "vm.cacheMode", "fast")
    assert e.value.field == "value" and "none, writeback, writethrough; got 'fast'" in str(e.value)
