"""The agent's rados connection (no Ceph needed): what an operator got wrong is named before librados is asked."""

from __future__ import annotations

import pytest

from cephagent.cluster import CephCluster
from cephagent.errors import ClusterUnavailable


def test_a_keyring_that_cannot_be_read_is_named(tmp_path):
    """librados said 'RADOS object not found', or (no ceph.conf) turned cephx off and timed out."""
    cluster = CephCluster(None, "client.admin", str(tmp_path / "missing.keyring"), "127.0.0.1:1", timeout=1)
    with pytest.raises(ClusterUnavailable, match=f"keyring {tmp_path}/missing.keyring of client.admin: "
                       "No such file or directory"):
        cluster.connect()
