"""metadata: requests/s of our metadata server against lighttpd serving the same files from the same namespace.

Both listen on 169.254.169.254 in one service namespace (ours on :80, lighttpd on :8080) and are loaded by
wrk from a VM namespace (1 thread, 32 keep-alive connections, a mix of EC2 paths). lighttpd's tree is
our EC2 tree for that VM written to files, so both answer with the same bytes; ours also identifies the
VM (address + neighbour MAC) on every connection. Before that, 200 concurrent cloud-init EC2 crawls
(`DataSourceEc2.crawl_metadata`, the real client code) from 4 VM namespaces against each server; the
second-last line reports their p99 duration. Everything shares the machine's 2 cores: the crawl figures
include the clients' own CPU time.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
from pathlib import Path

from agentkit.proc import arun
from flatnet.metadata import ec2
from flatnet.metadata.settings import IMDS_ADDRESS, MetadataSettings
from flatnet.metadata.store import Store
from flatnet.metadata.tree import Dir, Node
from testbed import cloudinit
from testbed.metadatalab import MetadataLab
from testbed.netns import Run

VMS, CRAWLS, SECONDS, CONNECTIONS, PEER_PORT = 4, 200, 5, 32, 8080
PATHS = ["/latest/meta-data/instance-id", "/latest/meta-data/", "/latest/user-data",
         "/latest/meta-data/public-keys/0/openssh-key", "/latest/dynamic/instance-identity/document"]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchKeyBenchKeyBenchKeyBenchKeyBenchKey00 bench@hoststack"
USERDATA = "#cloud-config\nruncmd:\n  - echo bench\n" + "# padding\n" * 40


def materialize(node: Node, path: Path) -> None:
    """Write an EC2 tree as lighttpd files: a directory's listing becomes its index file."""
    if isinstance(node, Dir):
        path.mkdir(parents=True, exist_ok=True)
        (path / "index").write_text(node.listing())
        for name, child in node.children.items():
            materialize(child, path / name)
    else:
        path.write_bytes(node if isinstance(node, bytes) else node.encode())


def start_lighttpd(lab: MetadataLab) -> None:
    root = lab.run.path("docroot")
    store = Store(MetadataSettings())
    store.update(*lab.state())
    caller = store.caller(lab.l3.uuid, lab.vms[0].nic.ip)
    root.mkdir()
    (root / "index").write_text("\n".join(ec2.VERSIONS))
    for version in ec2.VERSIONS:
        materialize(ec2.root(caller, version), root / version)
    conf = lab.run.path("lighttpd.conf")
    conf.write_text(f'server.document-root = "{root}"\nserver.bind = "{IMDS_ADDRESS}"\nserver.port = {PEER_PORT}\n'
                    'index-file.names = ("index")\nmimetype.assign = ("" => "text/plain")\n'
                    f'server.errorlog = "{lab.run.path("lighttpd.err")}"\n')
    lab.svc.popen(["lighttpd", "-D", "-f", str(conf)], log_name="lighttpd")


async def wrk(lab: MetadataLab, port: int) -> float:
    script = lab.run.path("paths.lua")
    script.write_text("local paths = {" + ", ".join(f'"{p}"' for p in PATHS) + "}\nlocal i = 0\n"
                      "request = function()\n  i = i % #paths + 1\n  return wrk.format('GET', paths[i])\nend\n")
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "-s", str(script), f"http://{IMDS_ADDRESS}:{port}/"]
    out = (await arun(lab.vms[0].ns.argv(argv), timeout=SECONDS + 30)).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk got errors from port {port}:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


async def crawl_p99(lab: MetadataLab, port: int) -> float:
    """p99 seconds of CRAWLS concurrent cloud-init crawls spread over the VM namespaces."""
    url = f"http://{IMDS_ADDRESS}:{port}"
    each = CRAWLS // len(lab.vms)
    outs = await asyncio.gather(*(arun(cloudinit.argv(vm.ns, "crawl", url, lab.run.path(f"crawl{i}"), str(each)),
                                       timeout=180) for i, vm in enumerate(lab.vms)))
    results = [json.loads(o.stdout) for o in outs]
    failures = sum(r["failures"] for r in results)
    if failures:
        raise SystemExit(f"{failures} crawls against port {port} failed")
    durations = [d for r in results for d in r["durations"]]
    return statistics.quantiles(durations, n=100)[98]


async def bench(lab: MetadataLab) -> None:
    service = await lab.serve()
    try:
        start_lighttpd(lab)
        await asyncio.sleep(0.3)
        crawl_ours, crawl_peer = await crawl_p99(lab, 80), await crawl_p99(lab, PEER_PORT)
        ours, peer = await wrk(lab, 80), await wrk(lab, PEER_PORT)
    finally:
        await service.close()
    print(f"wrk: 1 thread, {CONNECTIONS} connections, {SECONDS}s, {len(PATHS)} paths; crawls from {VMS} VMs",
          file=sys.stderr)
    print(f"crawl p99 ({CRAWLS} concurrent cloud-init crawls): ours={crawl_ours * 1000:.0f}ms "
          f"peer={crawl_peer * 1000:.0f}ms")
    print(f"metadata: ours={ours:.0f} peer={peer:.0f} ratio={ours / peer:.3f}")


def main() -> None:
    with Run() as run:
        lab = MetadataLab.create(run)
        for i in range(VMS):
            lab.add_vm(f"bench-{i}", userdata=USERDATA, ssh_keys={"bench": KEY})
        asyncio.run(bench(lab))


if __name__ == "__main__":
    main()
