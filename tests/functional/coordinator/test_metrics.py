"""The coordinator's /metrics on a real etcd: requests per route, etcd latency, leadership, streams, schema,
and the age of the newest backup as `hs-ctl backup` records it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from coordinator.client import ApiClientError, Client
from testbed import promtext

pytestmark = pytest.mark.real


async def scrape(api: Client) -> str:
    async with api._session.get(api.url + "/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    promtext.families(text)  # as Prometheus reads it: HELP and TYPE, *_total counters, no series twice, ...
    return text


def value(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert m, f"no {series} in\n{text}"
    return float(m.group(1))


async def test_metrics_of_a_replica(api: Client, coordinator, etcd, token, run):
    for _ in range(3):
        await api.get("/v1/hosts")
    with pytest.raises(ApiClientError):
        await api.get("/v1/hosts/nope")
    before = await scrape(api)
    assert value(before, 'hoststack_http_requests_total{route="/v1/hosts",method="GET",code="200"}') >= 3
    assert value(before, 'hoststack_http_requests_total{route="/v1/hosts/{uuid}",method="GET",code="404"}') >= 1
    assert value(before, 'hoststack_http_request_seconds_count{route="/v1/hosts",method="GET"}') >= 3
    assert value(before, 'hoststack_etcd_request_seconds_count{op="range"}') > 0
    assert value(before, "hoststack_leader") == 1 and value(before, "hoststack_host_streams") == 0
    schema = [value(before, f'hoststack_schema_version{{of="{of}"}}') for of in ("data", "replica")]
    assert schema[0] == schema[1]
    assert not re.search("^hoststack_backup_age_seconds ", before, re.M)  # no backup yet
    env = {**os.environ, "HS_COORDINATOR_CONFIG": "/nonexistent", "HS_COORDINATOR_ETCD": etcd.endpoint,
           "HS_COORDINATOR_ADMIN_TOKEN": token, "HS_CTL_CONFIG": "/nonexistent",
           "HS_CTL_BACKUP_DIR": str(run.path("bk"))}
    subprocess.run([sys.executable, "-m", "coordinator.ctl.main", "backup"], env=env, check=True, timeout=60)
    assert 0 <= value(await scrape(api), "hoststack_backup_age_seconds") < 30
    async with Client(coordinator.url, "wrong-token-wrong-token") as other:
        with pytest.raises(ApiClientError) as e:
            await other.get("/metrics")
    assert e.value.status == 401


async def test_hosts_are_counted_by_state_and_reported_health(api: Client, coordinator):
    series = 'hoststack_hosts{{kind="kvm",state="{}",health="{}"}}'
    host = await api.post("/v1/hosts", {"name": "metrics-host", "address": "198.18.9.9"})
    assert value(await scrape(api), series.format("Disconnected", "none")) >= 1  # never reported
    event = {"seq": 1, "kind": "health", "id": host["uuid"], "body": {"errors": {"eip": "DataplaneError: x"}},
             "at": time.time()}
    async with Client(coordinator.url, host["token"]) as agent:
        await agent.post(f"/v1/hosts/{host['uuid']}/observed", {"events": [event]})
        await agent.post(f"/v1/hosts/{host['uuid']}/heartbeat")
    assert value(await scrape(api), series.format("Connected", "degraded")) == 1
    await api.delete(f"/v1/hosts/{host['uuid']}")
    assert not re.search(re.escape(series.format("Connected", "degraded")), await scrape(api))  # forgotten with it
