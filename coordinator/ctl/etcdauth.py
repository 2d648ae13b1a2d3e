"""etcd's users on a control node, as data: auth on, with etcd's root user for the operator's tools (`hs-ctl
backup` snapshots etcd, which only root may) and the coordinator's own user, whose role reads and writes
HostStack's key prefix and nothing else.

The first install makes both passwords; later installs read them back from the node (install.py's
secrets): root's from a file only root reads (`layout.ETCD_ROOT_CONFIG`, which hs-ctl reads too), the
coordinator's from its own settings. The node applies this once (deployer.remote.node.etcd_auth, between
etcd's start and the coordinator's) and stamps its digest, so a second install does not ask etcd again.
"""

from __future__ import annotations

import json
from typing import Any

from coordinator.ctl import layout
from coordinator.etcd import keys
from deployer import render

ROOT_USER = "root"
USER = ROLE = "hoststack"
STAMP = "etcd auth"  # the node's stamp key


def root_settings(secrets: dict[str, str]) -> dict[str, render.Value]:
    """What `layout.ETCD_ROOT_CONFIG` holds: how hs-ctl logs in to etcd as root."""
    return {"etcd_user": ROOT_USER, "etcd_password": secrets["etcd_root_password"]}


def coordinator_settings(secrets: dict[str, str]) -> dict[str, render.Value]:
    """The coordinator's `etcd_user`/`etcd_password`."""
    return {"etcd_user": USER, "etcd_password": secrets["etcd_password"]}


def setup(endpoint: str, tls: bool, secrets: dict[str, str]) -> dict[str, Any]:
    """The arguments of the node's etcd auth step; `digest` names the state it leaves etcd in."""
    a: dict[str, Any] = {"endpoint": endpoint, "root_password": secrets["etcd_root_password"], "user": USER,
                         "password": secrets["etcd_password"], "role": ROLE, "prefix": keys.ROOT,
                         "root_file": str(layout.ETCD_ROOT_CONFIG)}
    if tls:  # etcd wants the client certificate besides the password (etcdctl's --cacert, --cert, --key)
        a.update(cacert=str(layout.PKI_FILES.ca), cert=str(layout.PKI_FILES.cert("etcd-client")),
                 key=str(layout.PKI_FILES.key("etcd-client")))
    return {**a, "digest": render.digest(json.dumps(a, sort_keys=True)), "stamp": str(layout.STAMP)}
