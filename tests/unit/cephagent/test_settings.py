"""cephagent settings through agentkit.config: environment values, defaults and errors naming the key."""

import pytest

from agentkit import config
from cephagent.settings import CephAgentSettings


def test_env_sets_every_key_and_lists_are_comma_separated(tmp_path):
    env = {"HS_CEPHAGENT_CONFIG": str(tmp_path / "none.toml"), "HS_CEPHAGENT_TOKEN": "x" * 16,
           "HS_CEPHAGENT_FILE_URL_ROOTS": "/srv/images,/tmp/x", "HS_CEPHAGENT_CEPH_CONF": ""}
    s = config.load(CephAgentSettings, "cephagent", env=env)
    assert (s.port, s.client_name, s.vm_client, s.ceph_conf) == (8742, "client.admin", "client.hoststack-vm", None)
    assert s.file_url_roots == ["/srv/images", "/tmp/x"]
    assert "x" * 16 not in repr(s)


def test_short_token_is_refused_naming_the_key_not_echoing_it(tmp_path):
    (tmp_path / "c.toml").write_text('token = "s3cr3t"\nvm_client_name = "client.vms"\n')
    with pytest.raises(config.ConfigError, match=r"token='\*{10}' from .*c.toml") as e:
        config.load(CephAgentSettings, "cephagent", tmp_path / "c.toml", env={})
    assert "s3cr3t" not in str(e.value) and "s3cr3t" not in str(e.value.__cause__)


@pytest.mark.parametrize("name", ["client.admin", "admin", "hsvms"])
def test_the_vm_user_is_never_the_admin(tmp_path, name):
    env = {"HS_CEPHAGENT_TOKEN": "x" * 16, "HS_CEPHAGENT_VM_CLIENT_NAME": name}
    with pytest.raises(config.ConfigError, match=f"vm_client_name='{name}'.*never client.admin"):
        config.load(CephAgentSettings, "cephagent", tmp_path / "none.toml", env=env)
