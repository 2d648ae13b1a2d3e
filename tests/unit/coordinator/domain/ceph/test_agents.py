"""Reaching a storage's cephagents: the token is required, calls fail over from an unreachable agent (or one
that answers something of the wrong shape) to the next mon host's, any other failure is the answer, and
agents' failures become the coordinator's."""

from __future__ import annotations

import pytest

from cephagent.client import AgentUnreachable, CephAgentClient
from cephagent.errors import RemoteError
from cephagent.wire import ClusterInfo
from coordinator.domain.ceph.agents import Agents, agent_error
from coordinator.domain.ceph.errors import AgentFailed, AgentUnauthorized, NotConfigured
from coordinator.domain.ceph.records import MonRecord, StorageRecord
from coordinator.domain.ceph.views import describe

from .standin import FSID, settings


def storage(*hosts: str) -> StorageRecord:
    mons = [MonRecord(host=h, mon_port=6789, ssh_port=22, ssh_username="root", ssh_password="x") for h in hosts]
    return StorageRecord(uuid="u", name="bs1", kind="bs", zone="default", fsid=FSID, mons=mons, pools={},
                         created_at=0)


@pytest.mark.parametrize("remote, status, code, field", [
    (RemoteError(404, "pool_not_found", "Ceph pool 'p' does not exist", "name"), 404, "pool_not_found", "pool_name"),
    (RemoteError(409, "has_dependants", "p/i has clones"), 409, "has_dependants", "pool_name"),
    (RemoteError(500, "internal", "internal error; see the cephagent log"), 502, "internal", "pool_name"),
    (RemoteError(503, "cluster_unavailable", "Ceph cluster unavailable: x"), 503, "cluster_unavailable", "pool_name"),
    (RemoteError(200, "odd", "a success status with an error body"), 502, "odd", "pool_name"),
])
def test_agent_failures_keep_their_code_and_become_the_coordinators_status(remote, status, code, field):
    err = agent_error(remote, "pool_name")
    assert isinstance(err, AgentFailed)
    assert (err.status, err.code, err.message, err.field) == (status, code, remote.message, field)
    assert agent_error(RemoteError(404, "image_not_found", "m", "name")).field == "name"


def test_a_rejected_token_is_the_coordinators_bad_gateway():
    err = agent_error(RemoteError(401, "unauthorized", "missing or wrong bearer token"))
    assert isinstance(err, AgentUnauthorized)
    assert (err.status, err.code, err.message) == (
        502, "agent_unauthorized", "a cephagent rejected the coordinator's cephagent_token: missing or wrong bearer "
        "token")


def test_ceph_needs_the_cephagent_token():
    with pytest.raises(NotConfigured, match="needs the coordinator setting cephagent_token") as e:
        Agents(settings(8742, token=None))
    assert (e.value.status, e.value.code) == (409, "not_configured")


async def test_calls_fail_over_from_an_unreachable_agent(stand_in):
    port = await stand_in("127.0.0.1")
    async with Agents(settings(port), timeout=5) as agents:
        info, host = await agents.call(storage("127.0.0.2", "127.0.0.1"), lambda c: c.cluster())
        assert (info.fsid, host) == (FSID, "127.0.0.1")
        _, host = await agents.call(storage("127.0.0.2", "127.0.0.1"), lambda c: c.cluster(), first_host="127.0.0.1")
        assert host == "127.0.0.1"
        with pytest.raises(AgentFailed, match="no cephagent of Ceph backup storage bs1 answered: cephagent at "
                                              "http://127.0.0.3") as e:
            await agents.call(storage("127.0.0.3"), lambda c: c.cluster())
    assert (e.value.status, e.value.code) == (502, "agent_unreachable")


async def test_any_other_failure_is_the_answer(stand_in):
    port = await stand_in("127.0.0.1", delete_image=(409, "has_dependants"))
    await stand_in("127.0.0.2", port=port)
    async with Agents(settings(port), timeout=5) as agents:
        with pytest.raises(AgentFailed, match="has_dependants at 127.0.0.1") as e:
            await agents.call(storage("127.0.0.1", "127.0.0.2"), lambda c: c.delete_image("p", "i"))
    assert (e.value.status, e.value.code, e.value.field) == (409, "has_dependants", "name")


async def test_survey_asks_every_mon_host_once(stand_in):
    port = await stand_in("127.0.0.1")
    rec = storage("127.0.0.1", "127.0.0.1", "127.0.0.2")
    async with Agents(settings(port), timeout=5) as agents:
        survey = await agents.survey(rec, timeout=5)
    assert list(survey) == ["127.0.0.1", "127.0.0.2"]
    assert isinstance(survey["127.0.0.1"], ClusterInfo) and isinstance(survey["127.0.0.2"], AgentUnreachable)


async def test_an_answer_of_the_wrong_shape_is_no_answer_and_a_bug_of_ours_is_not_hidden(stand_in, monkeypatch):
    port = await stand_in("127.0.0.1")
    await stand_in("127.0.0.2", port=port, cluster_answer=["not", "a", "cluster"])
    rec = storage("127.0.0.2", "127.0.0.1")
    async with Agents(settings(port), timeout=5) as agents:
        _, host = await agents.call(rec, lambda c: c.cluster())
        view = describe(rec, await agents.survey(rec, timeout=5))

        async def bug(_: CephAgentClient) -> ClusterInfo:
            raise KeyError("a bug of ours")

        monkeypatch.setattr(CephAgentClient, "cluster", bug)
        with pytest.raises(KeyError, match="a bug of ours"):
            await agents.survey(rec, timeout=5)
    assert host == "127.0.0.1"
    assert [(m.status, m.reason) for m in view.mons] == [
        ("Disconnected", f"cephagent at http://127.0.0.2:{port} did not answer: GET /v1/cluster: a malformed answer "
                         "(body: Input should be a valid dictionary or instance of ClusterInfo)"),
        ("Connected", None)]


def test_each_agent_is_called_with_its_hosts_own_token_else_the_shared_one():
    from typing import cast

    from coordinator.domain.ceph.errors import NoAgentToken
    from coordinator.etcd.store import Store

    from .standin import TOKEN

    shared = Agents(settings(8742))
    shared.tokens = {"198.18.0.2": "own-token-0123456789"}  # what __aenter__ reads from the ceph hosts' records
    assert (shared.token("198.18.0.2"), shared.token("198.18.0.3")) == ("own-token-0123456789", TOKEN)
    own_only = Agents(settings(8742, token=None), store=cast(Store, object()))
    own_only.tokens = {"198.18.0.2": "own-token-0123456789"}
    assert own_only.client("198.18.0.2").base_url == "http://198.18.0.2:8742"
    with pytest.raises(NoAgentToken, match="no token for the cephagent on 198.18.0.3: register it as a ceph host"):
        own_only.client("198.18.0.3")


async def test_a_request_answered_with_something_of_the_wrong_shape_goes_to_the_next_agent(stand_in):
    port = await stand_in("127.0.0.1")
    await stand_in("127.0.0.2", port=port, import_image=["not", "a", "task"])
    async with Agents(settings(port), timeout=5) as agents:
        answer = await agents.call(storage("127.0.0.2", "127.0.0.1"), lambda c: c.import_image("p", "i", "file:///a"))
        with pytest.raises(AgentFailed, match="did not answer: POST /v1/images: a malformed answer") as e:
            await agents.call(storage("127.0.0.2"), lambda c: c.import_image("p", "i", "file:///a"))
    assert answer == ("t1", "127.0.0.1")
    assert (e.value.status, e.value.code) == (502, "agent_unreachable")
