"""Which cluster a set of mons belongs to: monUrls parsed, every mon's agent asked, one fsid required."""

from __future__ import annotations

import pytest

from cephagent.errors import InvalidMonUrl
from coordinator.domain.ceph.agents import Agents
from coordinator.domain.ceph.errors import AgentFailed
from coordinator.domain.ceph.mons import cluster_of, parse_mons

from .standin import FSID, settings


def test_mon_urls_are_parsed_and_limited():
    assert [m.host for m in parse_mons("root:a@10.0.0.1,root:b@10.0.0.2")] == ["10.0.0.1", "10.0.0.2"]
    with pytest.raises(InvalidMonUrl, match="at most 16 mon_urls") as e:
        parse_mons([f"root:pw@10.0.0.{i}" for i in range(17)])
    assert (e.value.status, e.value.code, e.value.field) == (400, "invalid_mon_url", "mon_urls")


async def test_the_mons_agents_must_agree_on_the_cluster(stand_in):
    port = await stand_in("127.0.0.1")
    await stand_in("127.0.0.2", port=port, fsid="another")
    async with Agents(settings(port), timeout=5) as agents:
        fsid, infos = await cluster_of(agents, parse_mons(["root:pw@127.0.0.1", "root:pw@127.0.0.1/?monPort=6790"]))
        assert fsid == FSID and set(infos) == {"127.0.0.1"}
        with pytest.raises(AgentFailed, match="mon root:\\*\\*\\*@127.0.0.2:22/\\?monPort=6789 reports fsid another")\
                as e:
            await cluster_of(agents, parse_mons(["root:pw@127.0.0.1", "root:pw@127.0.0.2"]))
        assert (e.value.status, e.value.code, e.value.field) == (409, "fsid_mismatch", "mon_urls")
        with pytest.raises(AgentFailed, match="the storage's cluster is another"):
            await cluster_of(agents, parse_mons(["root:pw@127.0.0.1"]), expected="another")


async def test_an_unreachable_agent_is_the_callers_mistake(stand_in):
    port = await stand_in("127.0.0.1")
    async with Agents(settings(port), timeout=5) as agents:
        with pytest.raises(AgentFailed, match="mon root:\\*\\*\\*@127.0.0.3:22/\\?monPort=6789: cephagent at") as e:
            await cluster_of(agents, parse_mons(["root:pw@127.0.0.1", "root:secret@127.0.0.3"]))
    assert (e.value.status, e.value.code, e.value.field) == (400, "agent_unreachable", "mon_urls")
    assert "secret" not in e.value.message
