"""Where the node's services answer, read from the files install wrote (which an operator may have edited)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coordinator.ctl import node, services
from coordinator.ctl.errors import ServiceFailed
from coordinator.ctl.settings import CtlSettings


@pytest.mark.parametrize("text, said", [
    ('{"name": "cn1"}', "no advertise-client-urls"),  # a KeyError traceback
    ("[1]", "not a JSON object"),  # a TypeError traceback
    ("name: cn1\n", "Expecting value"),  # YAML, which etcd reads too
])
def test_an_etcd_configuration_without_its_client_url_is_named_not_a_traceback(tmp_path: Path, text: str, said: str):
    (tmp_path / "etcd.json").write_text(text)
    with pytest.raises(ServiceFailed, match=f"^etcd's configuration {tmp_path}/etcd.json: {said}"):
        services.health_url(CtlSettings(etcd_config=tmp_path / "etcd.json"), node.ETCD)


def test_etcds_health_url_is_its_first_advertised_client_url(tmp_path: Path):
    (tmp_path / "etcd.json").write_text('{"advertise-client-urls": "http://127.0.0.1:2379,http://10.0.0.5:2379"}')
    assert services.health_url(CtlSettings(etcd_config=tmp_path / "etcd.json"), node.ETCD) == \
        "http://127.0.0.1:2379/health"


@pytest.mark.parametrize("names, said", [(["etcd", "bogus"], "'bogus'"), ([""], "''")])  # '' was 'no service ;'
def test_an_unknown_service_name_is_named_before_any_service_is_touched(names: list[str], said: str):
    with pytest.raises(ServiceFailed, match=f"^no service {said}; the node runs etcd, coordinator, consoleproxy$"):
        services.pick(names)
    assert [svc.name for svc in services.pick(["consoleproxy", "etcd"])] == ["etcd", "consoleproxy"]  # start order


def test_a_node_without_the_coordinators_settings_file_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """hs-ctl status on a machine that is not (yet) a control node: the file is the news, not its first key (and
    a secret that nothing set shows as None, not as a masked value)."""
    for name in [k for k in os.environ if k.startswith("HS_COORDINATOR_")]:
        monkeypatch.delenv(name)
    with pytest.raises(ServiceFailed) as e:
        services.coordinator_settings(CtlSettings(coordinator_config=tmp_path / "coordinator.toml"))
    assert str(e.value).startswith(f"the coordinator's settings: {tmp_path}/coordinator.toml is not there (not a "
                                   "control node?); config admin_token=None from default: Field required")
