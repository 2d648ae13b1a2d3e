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


def test_each_agent_listens_where_the_coordinator_reaches_it_and_no_two_share_a_port():
    """Agents may share a node (a control node runs a console proxy and may hold an image store), so each
    process's default port is its own, and the coordinator's defaults for reaching them are those ports."""
    from cephagent.settings import CephAgentSettings
    from consoleproxy.settings import ConsoleProxySettings
    from imagestore.settings import ImageStoreSettings
    from kvmagent.settings import KvmAgentSettings

    c = CoordinatorSettings(admin_token="a" * 16)
    ports = {"coordinator": c.port, "kvmagent": c.kvmagent_port, "cephagent": c.cephagent_port,
             "consoleproxy": c.console_proxy_port, "imagestore": c.imagestore_port}
    assert ports["kvmagent"] == KvmAgentSettings.model_fields["port"].default
    assert ports["cephagent"] == CephAgentSettings.model_fields["port"].default
    assert ports["consoleproxy"] == ConsoleProxySettings.model_fields["port"].default
    assert ports["imagestore"] == ImageStoreSettings.model_fields["port"].default
    assert len(set(ports.values())) == len(ports), ports
