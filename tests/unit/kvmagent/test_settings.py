"""kvmagent's parameters: declared once, each dataplane in its own section."""

from __future__ import annotations

import json

import pytest

from agentkit import config
from kvmagent.settings import KvmAgentSettings


def test_sections_from_file_and_environment(tmp_path):
    path = tmp_path / "kvmagent.toml"
    path.write_text('coordinator_url = "http://10.0.0.1:8740"\nhost_uuid = "h1"\n'
                    '[vm]\ndrift_policy = "restart"\nsync_interval = 30\n')
    env = {"HS_KVMAGENT_HOST_TOKEN": "host-token-1234", "HS_KVMAGENT_VM": json.dumps({"stop_timeout": 5})}
    s = config.load(KvmAgentSettings, "kvmagent", path, env)
    assert s.host_token.get_secret_value() == "host-token-1234" and s.resync_interval == 60
    assert s.vm.stop_timeout == 5 and s.vm.drift_policy == "adopt"  # env replaces the whole section
    from_file = config.load(KvmAgentSettings, "kvmagent", path, {"HS_KVMAGENT_HOST_TOKEN": "host-token-1234"})
    assert from_file.vm.drift_policy == "restart"  # the retired `sync_interval` is ignored, not an error


@pytest.mark.parametrize("port", ["0", "65536"])
def test_the_api_port_is_one_to_listen_on_and_a_bad_one_is_named(port):
    """Port 0 made the agent listen on whatever port was free, where neither the coordinator nor its console
    tunnels (`kvmagent_port`) reach it."""
    env = {"HS_KVMAGENT_COORDINATOR_URL": "https://10.0.0.1:8740", "HS_KVMAGENT_HOST_UUID": "h1",
           "HS_KVMAGENT_HOST_TOKEN": "host-token-1234", "HS_KVMAGENT_PORT": port}
    with pytest.raises(config.ConfigError, match=rf"^config port='{port}' from \$HS_KVMAGENT_PORT: Input should be"):
        config.load(KvmAgentSettings, "kvmagent", "/nonexistent/kvmagent.toml", env)


@pytest.mark.parametrize("name, bad", [("host_token", "s3cr"), ("api_token", "sh0rt-s3cret"),
                                       ("metrics_token", "m3tr1cs-sh0rt")])
def test_tokens_stay_out_of_the_settings_repr_and_of_errors(name, bad):
    """The settings' repr reaches logs and tracebacks, an error about a bad value the journal: no token in either."""
    tokens = {"host_token": "h0st-s3cret", "api_token": "ap1-s3cret-t0ken-x", "metrics_token": "m3trics-s3cret-t0ken"}
    s = KvmAgentSettings(coordinator_url="https://10.0.0.1:8740", host_uuid="h1", **tokens)
    assert [t for t in tokens.values() if t in repr(s)] == [] and s.host_token.get_secret_value() == "h0st-s3cret"
    env = {f"HS_KVMAGENT_{k.upper()}": v for k, v in {"coordinator_url": "https://10.0.0.1:8740", "host_uuid": "h1",
                                                        **tokens, name: str(bad)}.items()}
    with pytest.raises(config.ConfigError, match=rf"^config {name}='\*{{10}}' from \$HS_KVMAGENT_") as e:
        config.load(KvmAgentSettings, "kvmagent", "/nonexistent/kvmagent.toml", env)
    assert str(bad) not in str(e.value) and str(bad) not in str(e.value.__cause__)
