"""Coordinator settings: stored-credential keys are checked at start-up; secrets stay out of reprs and errors."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from agentkit import config
from coordinator.settings import CoordinatorSettings, fernet_keys

SECRETS = {"admin_token": "adm1n-s3cret-t0ken", "reader_token": "r3ader-s3cret-t0ken",
           "metrics_token": "m3trics-s3cret-t0ken", "cephagent_token": "c3ph-s3cret-t0ken", "etcd_password": "s3cret",
           "secret_key": Fernet.generate_key().decode()}
BAD = {"admin_token": "sh0rt-s3cret", "reader_token": "a s3cret with spaces", "metrics_token": "sh0rt-s3cret",
       "cephagent_token": "sh0rt-s3cret", "secret_key": "n0t-a-fernet-s3cret", "etcd_password": 3141592653}


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


def test_secrets_stay_out_of_the_settings_repr_and_of_validation_errors(tmp_path):
    """A repr reaches logs and tracebacks, a bad value's error the terminal and the journal: neither shows a secret;
    where it is used, it is there."""
    s = CoordinatorSettings(**SECRETS, etcd_user="hs")
    assert [v for v in SECRETS.values() if v in repr(s) or v in str(s)] == []
    assert s.admin_token.get_secret_value() == SECRETS["admin_token"]
    for name, bad in BAD.items():
        with pytest.raises(ValidationError) as e:
            CoordinatorSettings(**{**SECRETS, name: bad})
        assert name in str(e.value) and str(bad) not in str(e.value)
        toml = {"admin_token": "a" * 16, name: bad}
        (tmp_path / "c.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in toml.items()))
        with pytest.raises(config.ConfigError, match=rf"^config {name}='\*{{10}}' from .*c\.toml: ") as c:
            config.load(CoordinatorSettings, "coordinator", tmp_path / "c.toml", {})
        assert str(bad) not in str(c.value) and str(bad) not in str(c.value.__cause__)
