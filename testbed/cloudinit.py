"""Debian's cloud-init datasources as a library, run inside a VM namespace: the real metadata client.

`python -m testbed.cloudinit MODE URL WORKDIR [VR_ADDRESS]` prints one JSON object with what the datasource
found. Platform detection reads the host's DMI, which no test controls, so it is pinned per mode (the KVM
agent's SMBIOS does that for a real guest): `ec2` unknown platform (IMDSv1 GETs), `ec2-aws` AWS (IMDSv2
token first), `openstack` (DMI check bypassed), `cloudstack` (virtual router = VR_ADDRESS, as learned
from the DHCP lease's server identifier). `crawl` runs N concurrent EC2 crawls (`crawl_metadata`) in
threads and prints their durations.

`argv(ns, ...)` builds the command line for `ip netns exec`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from testbed.netns import Netns

PYTHON = "/usr/bin/python3"  # Debian's interpreter: cloud-init's dependencies are its system packages
ROOT = Path(__file__).resolve().parent.parent
# a guest's public key for `sshkey::` tags, which must hold a real one
GUEST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPOS0LRNXfJ8hiMaYQPCc/+hIhD1XvSLgG9KYn7rGONX"


def argv(ns: Netns, mode: str, url: str, workdir: Path, *extra: str, max_wait: float = 6) -> list[str]:
    """`max_wait`: seconds the datasource keeps trying to reach the service (what a refused client waits)."""
    return ns.argv(["env", f"PYTHONPATH={ROOT}", f"HS_CLOUDINIT_MAX_WAIT={max_wait}", PYTHON, "-m",
                    "testbed.cloudinit", mode, url, str(workdir), *extra])


def _datasource(mode: str, url: str, workdir: str, extra: list[str]) -> Any:
    from cloudinit import distros, helpers

    paths = helpers.Paths({"cloud_dir": f"{workdir}/cloud", "run_dir": f"{workdir}/run"})
    distro = distros.fetch("debian")("debian", {}, paths)
    limits = {"max_wait": float(os.environ["HS_CLOUDINIT_MAX_WAIT"]), "timeout": 2, "retries": 1}
    if mode.startswith("ec2") or mode == "crawl":
        from cloudinit.sources import DataSourceEc2 as ec2

        cfg: dict[str, Any] = {"datasource": {"Ec2": {"metadata_urls": [url], "strict_id": "warn", **limits}}}
        ds = ec2.DataSourceEc2(cfg, distro, paths)
        ds._cloud_name = ec2.CloudNames.AWS if mode == "ec2-aws" else ec2.CloudNames.UNKNOWN
        return ds
    if mode == "openstack":
        from cloudinit.sources import DataSourceOpenStack as openstack

        openstack.detect_openstack = lambda accept_oracle=False: True
        cfg = {"datasource_list": ["OpenStack"], "datasource": {"OpenStack": {"metadata_urls": [url], **limits}}}
        return openstack.DataSourceOpenStack(cfg, distro, paths)
    if mode == "cloudstack":
        from cloudinit.sources import DataSourceCloudStack as cloudstack

        cloudstack.get_vr_address = lambda: extra[0]
        return cloudstack.DataSourceCloudStack({"datasource": {"CloudStack": limits}}, distro, paths)
    raise SystemExit(f"unknown mode {mode}")


def _describe(ds: Any) -> dict[str, Any]:
    ok = ds.get_data()
    if not ok:
        return {"ok": False}
    ud = ds.userdata_raw
    return {
        "ok": True,
        "instance_id": ds.get_instance_id(),
        "hostname": ds.get_hostname().hostname,
        "keys": ds.get_public_ssh_keys(),
        "userdata": ud.decode() if isinstance(ud, bytes) else ud,
        "az": ds.availability_zone,
        "metadata": ds.metadata,
        "network_json": getattr(ds, "network_json", None),
    }


def _crawl(mode: str, url: str, workdir: str, extra: list[str]) -> dict[str, Any]:
    """`extra[0]` concurrent crawls, each a fresh datasource doing the whole EC2 crawl."""
    durations: list[float] = []
    failures: list[float] = []

    def one() -> None:
        t0 = time.perf_counter()
        md = _datasource(mode, url, workdir, extra).crawl_metadata()
        (durations if md.get("meta-data") else failures).append(time.perf_counter() - t0)

    threads = [threading.Thread(target=one) for _ in range(int(extra[0]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"durations": durations, "failures": len(failures)}


def main(args: list[str]) -> None:
    mode, url, workdir, *extra = args
    from cloudinit.sources.helpers import ec2  # noqa: F401  (importing cloudinit resets logging: configure after)

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s", force=True)
    result = _crawl(mode, url, workdir, extra) if mode == "crawl" else _describe(_datasource(mode, url, workdir, extra))
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
