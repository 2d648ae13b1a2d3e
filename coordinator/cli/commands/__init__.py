"""The `hs` resource groups, in the order `hs --help` lists them; each module declares its commands."""

from __future__ import annotations

from coordinator.cli.commands import (
    ceph,
    consoleproxies,
    deploy,
    eips,
    hosts,
    images,
    networks,
    pki,
    storage,
    tags,
    vms,
)

GROUPS = (hosts.GROUP, networks.L2_GROUP, networks.L3_GROUP, vms.GROUP, storage.STORAGE_GROUP, storage.VOLUME_GROUP,
          eips.GROUP, tags.TAG_GROUP, tags.CONFIG_GROUP, images.IMAGE_GROUP, images.IMAGE_STORE_GROUP, ceph.GROUP,
          consoleproxies.GROUP, deploy.GROUP, pki.GROUP)
