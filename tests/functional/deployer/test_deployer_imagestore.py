"""`deploy("imagestore", …)` (what `hs deploy imagestore HOST` runs) installs the real image store on a
real sshd target: the agent runs from its venv with the host token as its `token` and the coordinator's
`metrics_token` for its scrapers, answers /health with the deployed version, and a redeploy changes nothing.
Connected means: its /health answers."""

from __future__ import annotations

import json
import tomllib
from functools import partial

import pytest

from deployer.deploy import current_version
from deployer.model import Target
from testbed.deploylab import deploy_apart
from testbed.imagestore import PORT, ns_get, serves_version

pytestmark = pytest.mark.real
FRESH = ["probe", "upload", "install", "config", "service", "wait connected"]


def health(fleet, target: Target) -> dict:
    status, body = ns_get(fleet.lab.ctl.name, target.address, PORT, "/health", target.host_token or "")
    assert status == 200, body
    return json.loads(body)


def run_deploy(fleet, target: Target) -> dict:
    return deploy_apart("imagestore", [target], fleet.coordinator.agent_url, admin_token=fleet.admin_token,
                        api_url=fleet.coordinator.api_url, settings=fleet.settings,
                        connected=partial(serves_version, fleet.lab.ctl.name))


def test_the_image_store_is_deployed_runs_and_answers(fleet):
    target = fleet.add("store1")
    host = fleet.hosts["store1"]
    r = run_deploy(fleet, target)["store1"]
    assert (r.ok, r.tasks) == (True, FRESH), r
    assert tomllib.loads(host.read("/etc/hoststack/imagestore.toml")) == {  # the stub coordinator is plain HTTP
        "token": target.host_token, "metrics_token": fleet.coordinator.metrics_token, "tls": {"plain_http": True}}
    answer = health(fleet, target)
    assert answer["version"] == current_version(fleet.settings) and answer["capacity"]["images"] == 0
    assert host.sh("test", "-d", "/var/lib/hoststack/imagestore/images").returncode == 0
    status, _ = ns_get(fleet.lab.ctl.name, target.address, PORT, "/metrics", fleet.coordinator.metrics_token)
    assert status == 200
    again = run_deploy(fleet, target)["store1"]
    assert (again.ok, again.changed, again.tasks) == (True, False, ["probe"])
