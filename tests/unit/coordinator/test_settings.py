"""Coordinator settings: stored-credential keys are checked at start-up."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from coordinator.settings import CoordinatorSettings, fernet_keys


def test_secret_key_takes_comma_separated_fernet_keys():
    a, b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    assert CoordinatorSettings(admin_token="t" * 24, secret_key=f" {a}, {b},").secret_key
    assert fernet_keys(f" {a}, {b},") == [a, b]


@pytest.mark.parametrize("bad, message", [(",", "secret_key is empty"), ("nope", "item 0 is not a Fernet key")])
def test_a_bad_secret_key_fails_at_start_up(bad: str, message: str):
    with pytest.raises(ValidationError, match=message):
        CoordinatorSettings(admin_token="t" * 24, secret_key=bad)
