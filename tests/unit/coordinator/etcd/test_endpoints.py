"""The `etcd*` settings as the driver reads them: endpoint forms, TLS by scheme or by files, one way to etcd."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from coordinator.etcd.endpoints import SETTINGS, Endpoint, EtcdConfig, TlsFiles, parse, split
from coordinator.settings import CoordinatorSettings

TOKEN = "t" * 24


def test_a_list_and_a_comma_list_are_the_same_endpoints():
    listed = CoordinatorSettings(admin_token=TOKEN, etcd=["10.0.0.1:2379", "10.0.0.2:2379"])
    comma = CoordinatorSettings(admin_token=TOKEN, etcd=" 10.0.0.1:2379, 10.0.0.2:2379,")
    assert listed.etcd == comma.etcd == ["10.0.0.1:2379", "10.0.0.2:2379"]
    assert EtcdConfig.from_settings(comma).endpoints == ("10.0.0.1:2379", "10.0.0.2:2379")


def test_endpoint_forms():
    assert parse(["a:1", "http://b:2", "https://c:3", "[::1]:4", "d"], tls_default=False) == [
        Endpoint("a", 1, False), Endpoint("b", 2, False), Endpoint("c", 3, True), Endpoint("::1", 4, False),
        Endpoint("d", 2379, False)]
    assert Endpoint("::1", 4, False).target == "[::1]:4"
    assert str(Endpoint("c", 3, True)) == "https://c:3"


def test_without_a_scheme_tls_follows_the_tls_files():
    assert parse(["a:1", "http://b:2"], tls_default=True) == [Endpoint("a", 1, True), Endpoint("b", 2, False)]


@pytest.mark.parametrize("bad", ["ftp://a:1", "a:port", "http://a:1/v3", "", "http://:1",
                                 "a:0", "https://a:0", "a:65536"])  # port 0 was read as etcd's default
def test_a_bad_endpoint_fails_when_the_configuration_is_built(bad: str):
    with pytest.raises(ValueError, match="endpoint|no etcd endpoint"):
        EtcdConfig.of([bad] if bad else [])


def test_srv_discovery_needs_no_endpoints_and_excludes_them():
    s = CoordinatorSettings(admin_token=TOKEN, etcd_discovery_srv="example.org", etcd_discovery_srv_name="prod")
    c = EtcdConfig.from_settings(s)
    assert (c.discovery_srv, c.discovery_srv_name) == ("example.org", "prod")
    with pytest.raises(ValidationError, match="either etcd or etcd_discovery_srv"):
        CoordinatorSettings(admin_token=TOKEN, etcd="a:1", etcd_discovery_srv="example.org")


def test_tls_and_auth_settings_go_in_pairs():
    with pytest.raises(ValueError, match="needs its key"):
        EtcdConfig.of("a:1", tls=TlsFiles(cert=Path("/c.pem")))
    s = CoordinatorSettings(admin_token=TOKEN, etcd_user="hs")
    with pytest.raises(ValueError, match="user and password"):
        EtcdConfig.from_settings(s)


def test_the_password_stays_out_of_the_configuration_s_repr():
    c = EtcdConfig.of("a:1", user="hs", password="s3cret-password")
    assert "s3cret" not in repr(c)


def test_split():
    assert split("a:1,,b:2 ") == ["a:1", "b:2"]
    assert split(["a:1", " "]) == ["a:1"]


@pytest.mark.parametrize("toml, env", [
    ("", {}),
    ('etcd = ["https://a:1", "b:2"]\netcd_ca = "/pki/ca.crt"\netcd_cert = "/pki/c.crt"\netcd_key = "/pki/c.key"\n'
     'etcd_user = "hs"\netcd_password = "pw-pw-pw"\netcd_timeout = 4\netcd_attempt_timeout = 0.5\n'
     f'admin_token = "{TOKEN}"\nport = 9000\n', {}),
    ('etcd_discovery_srv = "example.org"\n', {"HS_COORDINATOR_ETCD_DISCOVERY_SRV_NAME": "prod",
                                               "HS_COORDINATOR_ETCD_TIMEOUT": "7"}),
    ('etcd = "a:1"\n', {"HS_COORDINATOR_ETCD": "x:1, y:2", "HS_COORDINATOR_ETCD_ATTEMPT_TIMEOUT": "2"}),
])
def test_from_the_file_alone_is_what_the_coordinator_s_settings_give(tmp_path: Path, toml: str, env: dict[str, str]):
    """hs-ctl backup reads the driver's settings without the coordinator's model: the same keys, the same result."""
    from agentkit import config

    assert set(SETTINGS) == {k for k in CoordinatorSettings.model_fields if k.startswith("etcd")}
    path = tmp_path / "coordinator.toml"
    path.write_text(toml)
    whole = config.load(CoordinatorSettings, "coordinator", path, {"HS_COORDINATOR_ADMIN_TOKEN": TOKEN, **env})
    assert EtcdConfig.from_file(path, env) == EtcdConfig.from_settings(whole)


@pytest.mark.parametrize("toml, message", [
    ('etcd = "a:1"\netcd_discovery_srv = "example.org"\n', "either etcd or etcd_discovery_srv"),
    ("etcd_timeout = \"soon\"\n", r"^config etcd_timeout='soon' from .*coordinator\.toml: could not convert"),
    ("etcd_ca = 3\n", r"^config etcd_ca=3 from .*: not a string"),
    ("etcd = [1]\n", r"^config etcd=\[1\] from .*: not a string"),
    ('etcd_user = "hs"\n', "user and password go together"),
    ('etcd_user = "hs"\netcd_password = 31415926\n', r"^config etcd_password='\*{10}' from .*: not a string$"),
])
def test_bad_settings_from_the_file_name_what_is_wrong(tmp_path: Path, toml: str, message: str):
    from agentkit.configfile import ConfigError

    path = tmp_path / "coordinator.toml"
    path.write_text(toml)
    with pytest.raises((ConfigError, ValueError), match=message):
        EtcdConfig.from_file(path, {})
