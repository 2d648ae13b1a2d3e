"""Global configs: only declared names, only their allowed values."""

from __future__ import annotations

import pytest

from agentkit.errors import Invalid, NotFound
from coordinator.domain import configs


def test_a_declared_value_is_accepted():
    assert configs.check("kvm", "vm.cacheMode", "writethrough") == "kvm.vm.cacheMode"


def test_an_unknown_config_or_value_is_refused():
    with pytest.raises(NotFound) as missing:
        configs.check("kvm", "vm.cachemode", "x")
    assert (missing.value.field, missing.value.message) == (
        "name", "global config kvm.vm.cachemode does not exist; kvm has vm.cpuMode, vm.cacheMode, vm.consoleMode, "
        "reservedMemory")
    with pytest.raises(NotFound) as missing:
        configs.check("kmv", "vm.cacheMode", "x")
    assert (missing.value.field, missing.value.message) == (
        "category", "global config kmv.vm.cacheMode does not exist; the categories are kvm, mevoco")
    with pytest.raises(Invalid) as e:
        configs.check("kvm", "vm.cacheMode", "fast")
    assert e.value.field == "value" and "none, writeback, writethrough; got 'fast'" in str(e.value)
