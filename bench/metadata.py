"""metadata: requests/s of our metadata server against lighttpd serving the same files from the same namespace.

Both listen on 169.254.169.254 in one service namespace (ours on :80, lighttpd on :8080), each a single
process with one thread (ours in this process's event loop, lighttpd's default single worker), and are
loaded by the same wrk command from a VM namespace (1 thread, 32 keep-alive connections, a mix of 5 EC2
paths). lighttpd's tree is our EC2 tree for that VM written to files; before measuring, every path is
fetched from both and the bodies compared. lighttpd may keep a connection for any number of requests (its
default of 1000 would make it reconnect); ours also identifies the VM (address + neighbour MAC) on every
connection and checks the IMDS mode on every request. Each server gets a 1 s warm-up, then 3 pairs of 3 s
runs in alternating order (ours first, peer first, ours first), so that the machine's changing load hits
both alike; the figures are the medians (one run disturbed by another job does not decide), and the
CPU time per request of each server goes to stderr. Our per-guest request rate (1,024/s by default) is
turned off here: wrk from one VM is exactly what it exists to hold back, and lighttpd has none.
wrk and the crawl clients each run in a session of their own (`own_session`), as lighttpd does, so
that the kernel's per-session CPU sharing treats both servers alike. Before that, 200 concurrent
cloud-init EC2 crawls (`DataSourceEc2.crawl_metadata`, the real client code) from 4 VM namespaces against
each server; the second-last line reports their p99 duration and failures. Everything shares the
machine's cores: the crawl figures include the clients' own CPU time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import sys
from pathlib import Path

from agentkit.addr import METADATA_ADDRESS as IMDS_ADDRESS
from agentkit.proc import arun
from flatnet.metadata.flavours import ec2
from flatnet.metadata.flavours.tree import Dir, Node
from flatnet.metadata.settings import MetadataSettings
from flatnet.metadata.store import Store
from testbed import cloudinit, nshttp
from testbed.cpu import cpu_seconds
from testbed.metadatalab import MetadataLab
from testbed.netns import Run

VMS, CRAWLS, PAIRS, SECONDS, WARMUP, CONNECTIONS, PEER_PORT = 4, 200, 3, 3, 1, 32, 8080
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


def start_lighttpd(lab: MetadataLab) -> int:
    """Serve our EC2 tree of the first VM as files on PEER_PORT; the pid of the lighttpd process."""
    root = lab.run.path("docroot")
    store = Store(MetadataSettings())
    store.update(*lab.state())
    if (caller := store.caller(lab.l3.uuid, lab.vms[0].nic.ip)) is None:
        raise RuntimeError(f"the metadata store does not know {lab.vms[0].nic.ip}")
    root.mkdir()
    (root / "index").write_text("\n".join(ec2.VERSIONS))
    for version in ec2.VERSIONS:
        materialize(ec2.root(caller, version), root / version)
    conf = lab.run.path("lighttpd.conf")
    conf.write_text(f'server.document-root = "{root}"\nserver.bind = "{IMDS_ADDRESS}"\nserver.port = {PEER_PORT}\n'
                    'index-file.names = ("index")\nmimetype.assign = ("" => "text/plain")\n'
                    'server.max-keep-alive-requests = 1000000\n'
                    f'server.errorlog = "{lab.run.path("lighttpd.err")}"\n')
    return lab.svc.popen(["lighttpd", "-D", "-f", str(conf)], log_name="lighttpd").pid  # `ip netns exec` execs it


async def same_bytes(lab: MetadataLab) -> None:
    """Both servers must answer every benchmarked path with the same body, or the comparison is void."""
    for path in PATHS:
        ours, peer = [await nshttp.request(lab.vms[0].ns.name, IMDS_ADDRESS, path, port=p) for p in (80, PEER_PORT)]
        if ours is None or peer is None or (ours.status, ours.body) != (200, peer.body):
            raise SystemExit(f"{path}: ours and lighttpd differ: {ours} / {peer}")


def own_session(argv: list[str]) -> list[str]:
    """Run a client in a session of its own. The kernel shares CPU between sessions (autogroups) before
    processes: lighttpd has its own (`Run.popen`), while ours runs in this process; clients in this session
    would halve our server's share under load, and not the peer's."""
    return ["setsid", "--wait", *argv]


async def wrk(lab: MetadataLab, port: int, seconds: int = SECONDS) -> tuple[float, int]:
    """Requests/s and the number of requests of one wrk run."""
    script = lab.run.path("paths.lua")
    script.write_text("local paths = {" + ", ".join(f'"{p}"' for p in PATHS) + "}\nlocal i = 0\n"
                      "request = function()\n  i = i % #paths + 1\n  return wrk.format('GET', paths[i])\nend\n")
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(script), f"http://{IMDS_ADDRESS}:{port}/"]
    out = (await arun(own_session(lab.vms[0].ns.argv(argv)), timeout=seconds + 30)).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk got errors from port {port}:\n{out}")
    rate, requests = re.search(r"Requests/sec:\s+([\d.]+)", out), re.search(r"(\d+) requests in", out)
    if rate is None or requests is None:
        raise SystemExit(f"wrk output without a rate:\n{out}")
    return float(rate.group(1)), int(requests.group(1))


async def throughput(lab: MetadataLab, peer_pid: int) -> tuple[float, float]:
    """Median requests/s of ours and the peer over PAIRS pairs of runs in alternating order (ours first, then
    the peer first, ...), after a warm-up of each. CPU time per request of each server goes to stderr (ours
    includes this process's own work of starting wrk)."""
    for port in (80, PEER_PORT):
        await wrk(lab, port, WARMUP)
    pids = {80: os.getpid(), PEER_PORT: peer_pid}
    rates: dict[int, list[float]] = {80: [], PEER_PORT: []}
    cpu: dict[int, list[float]] = {80: [], PEER_PORT: []}
    for i in range(PAIRS):
        for port in (80, PEER_PORT) if i % 2 == 0 else (PEER_PORT, 80):
            before = cpu_seconds([pids[port]])
            rate, requests = await wrk(lab, port)
            rates[port].append(rate)
            cpu[port].append((cpu_seconds([pids[port]]) - before) / requests * 1e6)
    for port, name in ((80, "ours"), (PEER_PORT, "peer")):
        print(f"{name}: req/s {[round(r) for r in rates[port]]}, CPU µs/request {[round(c, 1) for c in cpu[port]]}",
              file=sys.stderr)
    return statistics.median(rates[80]), statistics.median(rates[PEER_PORT])


async def crawl_p99(lab: MetadataLab, port: int) -> tuple[float, int]:
    """p99 seconds of the successful ones of CRAWLS concurrent cloud-init crawls spread over the VM namespaces,
    and how many failed (cloud-init gave up: a request timed out twice)."""
    url = f"http://{IMDS_ADDRESS}:{port}"
    each = CRAWLS // len(lab.vms)
    outs = await asyncio.gather(*(arun(own_session(cloudinit.argv(vm.ns, "crawl", url, lab.run.path(f"crawl{i}"),
                                                                   str(each))), timeout=180)
                                  for i, vm in enumerate(lab.vms)))
    results = [json.loads(o.stdout) for o in outs]
    durations = [d for r in results for d in r["durations"]]
    return statistics.quantiles(durations, n=100)[98], sum(r["failures"] for r in results)


async def bench(lab: MetadataLab) -> None:
    service = await lab.serve(MetadataSettings(requests_per_second=0))  # lighttpd has no per-guest rate either
    try:
        peer_pid = start_lighttpd(lab)
        await asyncio.sleep(0.3)
        await same_bytes(lab)
        (crawl_ours, failed_ours), (crawl_peer, failed_peer) = await crawl_p99(lab, 80), await crawl_p99(lab, PEER_PORT)
        ours, peer = await throughput(lab, peer_pid)
    finally:
        await service.close()
    print(f"wrk: 1 thread, {CONNECTIONS} connections, {WARMUP}s warm-up + {PAIRS}x{SECONDS}s, {len(PATHS)} paths; "
          f"crawls from {VMS} VMs", file=sys.stderr)
    print(f"crawl p99 ({CRAWLS} concurrent cloud-init crawls): ours={crawl_ours * 1000:.0f}ms "
          f"peer={crawl_peer * 1000:.0f}ms failed: ours={failed_ours} peer={failed_peer}")
    print(f"metadata: ours={ours:.0f} peer={peer:.0f} ratio={ours / peer:.3f}")


def main() -> None:
    with Run() as run:
        lab = MetadataLab.create(run)
        for i in range(VMS):
            lab.add_vm(f"bench-{i}", userdata=USERDATA, ssh_keys={"bench": KEY})
        asyncio.run(bench(lab))


if __name__ == "__main__":
    main()
