"""cephagent settings through agentkit.config: environment values, defaults and errors naming the key."""

import pytest

from agentkit import config
from cephagent.settings import CephAgentSettings


def test_env_sets_every_key_and_lists_are_comma_separated(tmp_path):
    env = {"HS_CEPHAGENT_CONFIG": str(tmp_path / "none.toml"), "HS_CEPHAGENT_TOKEN": "x" * 16,
           "HS_CEPHAGENT_FILE_URL_ROOTS": "/srv/images,/tmp/x", "HS_CEPHAGENT_CEPH_CONF": ""}
    s = config.load(CephAgentSettings, "cephagent", env=env)
    assert (s.port, s.client_name, s.vm_client, s.ceph_conf) == (8742, "client.admin", "client.admin", None)
    assert s.file_url_roots == ["/srv/images", "/tmp/x"]
    assert "x" * 16 not in repr(s)


def test_short_token_is_refused_naming_the_key(tmp_path):
    (tmp_path / "c.toml").write_text('token = "short"\nvm_client_name = "client.vms"\n')
    with pytest.raises(config.ConfigError, match="token='short' from .*c.toml"):
        config.load(CephAgentSettings, "cephagent", tmp_path / "c.toml", env={})
