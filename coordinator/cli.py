"""`hs`: every coordinator resource from a shell, as tables or JSON.

Connection: `--url`/`HS_URL` (default http://127.0.0.1:8740) and `--token`/`HS_TOKEN`, or the file
`/etc/hoststack/cli.toml` with `url` and `token`. Errors print one line naming the field and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tomllib
from pathlib import Path

from coordinator import cephcli, deploycli  # noqa: F401 - importing cephcli registers `hs ceph …`
from coordinator.client import ApiClientError, Client
from coordinator.cliregistry import COMMANDS, WAIT, CliError, arg, command

COLUMNS = {
    "hosts": ["uuid", "name", "address", "kind", "state", "agent_version"],
    "l2_networks": ["uuid", "name", "physical_interface", "vlan"],
    "l3_networks": ["uuid", "name", "cidr", "gateway", "dhcp_address", "services"],
    "vms": ["uuid", "spec.name", "host_uuid", "spec.state", "observed.state", "spec.nics.0.ip"],
    "tags": ["uuid", "resource_uuid", "tag"],
    "configs": ["category", "name", "value", "allowed"],
    "eips": ["uuid", "name", "vip", "vm_uuid"],
    "entries": ["task", "phase", "ok", "duration_ms", "message"],
    "cephStorages": ["uuid", "name", "type", "zone", "fsid", "status", "capacity.available", "capacity.total"],
    "images": ["uuid", "name", "status", "percent", "size", "backupStorageUuid"],
    "volumes": ["uuid", "name", "type", "status", "size", "disk.pool", "disk.image"],
}


def _wait(a) -> dict:
    return {"wait": str(a.wait)} if a.wait else {}


# hosts -------------------------------------------------------------------------------------------
@command("host", "add", arg("name"), arg("address"), arg("--kind", default="kvm", choices=["kvm", "ceph"]),
         *deploycli.SSH_FLAGS)
async def host_add(c, a):
    """register a host (prints its agent token once); given SSH credentials, the coordinator deploys its agent"""
    body = {"name": a.name, "address": a.address, "kind": a.kind}
    if a.password or a.key_file:
        body["ssh"] = deploycli.ssh_body(a)
    return await c.post("/v1/hosts", body)


@command("host", "list")
async def host_list(c, a):
    """hosts and their connection state"""
    return await c.get("/v1/hosts")


@command("host", "show", arg("host"))
async def host_show(c, a):
    """one host (uuid or name)"""
    return await c.get(f"/v1/hosts/{a.host}")


@command("host", "delete", arg("host"))
async def host_delete(c, a):
    """forget a host"""
    return await c.delete(f"/v1/hosts/{a.host}")


@command("host", "deploy-log", arg("host"))
async def host_deploy_log(c, a):
    """what the deployer did on a host"""
    return await c.get(f"/v1/hosts/{a.host}/deploy-log")


# networks ----------------------------------------------------------------------------------------
@command("l2", "create", arg("name"), arg("--interface", required=True), arg("--vlan", type=int))
async def l2_create(c, a):
    """an L2 network on a physical interface"""
    return await c.post("/v1/l2-networks", {"name": a.name, "physical_interface": a.interface, "vlan": a.vlan})


@command("l2", "list")
async def l2_list(c, a):
    """L2 networks"""
    return await c.get("/v1/l2-networks")


@command("l2", "delete", arg("uuid"))
async def l2_delete(c, a):
    """delete an L2 network"""
    return await c.delete(f"/v1/l2-networks/{a.uuid}")


@command("l3", "create", arg("name"), arg("--l2", required=True), arg("--cidr", required=True), arg("--gateway"),
         arg("--range", action="append", default=[], help="START-END, repeatable"),
         arg("--dns", action="append", default=[]), arg("--domain"), arg("--mtu", type=int, default=1500),
         arg("--service", action="append", default=[], help="DHCP, DNS, Userdata, EIP"),
         arg("--public", action="store_true"), arg("--imds", choices=["optional", "required"], default="optional"))
async def l3_create(c, a):
    """an L3 network with its IP ranges and services"""
    ranges = []
    for r in a.range:
        start, sep, end = r.partition("-")
        if not sep:
            raise CliError(f"--range {r!r}: expected START-END")
        ranges.append({"start": start, "end": end})
    return await c.post("/v1/l3-networks", {
        "name": a.name, "l2_uuid": a.l2, "cidr": a.cidr, "gateway": a.gateway, "ip_ranges": ranges,
        "dns_servers": a.dns, "domain": a.domain, "mtu": a.mtu, "services": a.service, "public": a.public,
        "imds": a.imds})


@command("l3", "list")
async def l3_list(c, a):
    """L3 networks"""
    return await c.get("/v1/l3-networks")


@command("l3", "delete", arg("uuid"))
async def l3_delete(c, a):
    """delete an L3 network"""
    return await c.delete(f"/v1/l3-networks/{a.uuid}")


@command("l3", "attach-service", arg("uuid"), arg("service"))
async def l3_attach(c, a):
    """attach DHCP/DNS/Userdata/EIP"""
    return await c.post(f"/v1/l3-networks/{a.uuid}/services", {"service": a.service, "provider": "flat"})


@command("l3", "detach-service", arg("uuid"), arg("service"))
async def l3_detach(c, a):
    """detach a service"""
    return await c.delete(f"/v1/l3-networks/{a.uuid}/services/{a.service}")


# VMs ---------------------------------------------------------------------------------------------
@command("vm", "create", arg("name"), arg("--l3", action="append", default=[]), arg("--default-l3"),
         arg("--ip", action="append", default=[], help="L3=IP"), arg("--host"), arg("--cpu", type=int, default=1),
         arg("--memory", type=int, default=256, help="MiB"), arg("--stopped", action="store_true"), arg("--iso"),
         arg("--kernel"), arg("--initrd"), arg("--cmdline", default=""), arg("--root-disk"),
         arg("--root-backing"), arg("--tag", action="append", default=[]), WAIT)
async def vm_create(c, a):
    """create a VM"""
    body: dict = {"name": a.name, "l3_network_uuids": a.l3, "default_l3_uuid": a.default_l3, "host_uuid": a.host,
                  "cpu": a.cpu, "memory_mb": a.memory, "state": "Stopped" if a.stopped else "Running",
                  "iso_path": a.iso, "system_tags": a.tag, "fixed_ips": dict(_pair(x, "--ip") for x in a.ip)}
    if a.kernel:
        body["kernel"] = {"kernel": a.kernel, "initrd": a.initrd, "cmdline": a.cmdline}
    if a.root_disk:
        body["root_volume"] = {"kind": "file", "path": a.root_disk, "backing": a.root_backing}
    return await c.post("/v1/vms", body, **_wait(a))


@command("vm", "list")
async def vm_list(c, a):
    """VMs with desired and observed state"""
    return await c.get("/v1/vms")


@command("vm", "show", arg("vm"))
async def vm_show(c, a):
    """one VM"""
    return await c.get(f"/v1/vms/{a.vm}")


@command("vm", "destroy", arg("vm"), WAIT)
async def vm_destroy(c, a):
    """destroy a VM (completes on its host, also after the host comes back)"""
    return await c.delete(f"/v1/vms/{a.vm}", **_wait(a))


for _verb in ("start", "stop", "reboot", "pause", "resume"):
    async def _action(c, a, verb=_verb):
        return await c.post(f"/v1/vms/{a.vm}/actions", {"action": verb}, **_wait(a))
    command("vm", _verb, arg("vm"), WAIT, help=f"{_verb} a VM")(_action)


@command("vm", "cdrom", arg("vm"), arg("iso", nargs="?"), arg("--eject", action="store_true"))
async def vm_cdrom(c, a):
    """insert an ISO (or --eject)"""
    if not a.iso and not a.eject:
        raise CliError("give an ISO path or --eject")
    return await c.put(f"/v1/vms/{a.vm}/cdrom", {"iso_path": None if a.eject else a.iso})


@command("vm", "boot-order", arg("vm"), arg("order", help="e.g. CdRom,HardDisk"))
async def vm_boot_order(c, a):
    """set the boot order"""
    return await c.put(f"/v1/vms/{a.vm}/boot-order", {"order": a.order.split(",")})


@command("vm", "modes", arg("vm"), arg("--cpu-mode"), arg("--cache-mode"), arg("--console-mode"))
async def vm_modes(c, a):
    """per-VM cpu/cache/console modes"""
    body = {k: v for k, v in (("cpu_mode", a.cpu_mode), ("cache_mode", a.cache_mode),
                              ("console_mode", a.console_mode)) if v}
    return await c.patch(f"/v1/vms/{a.vm}", body)


@command("vm", "attach-volume", arg("vm"), arg("path"), arg("--size", type=int, default=1 << 30))
async def vm_attach_volume(c, a):
    """attach a qcow2 data volume (created if missing)"""
    return await c.post(f"/v1/vms/{a.vm}/volumes", {"disk": {"kind": "file", "path": a.path, "size_bytes": a.size}})


@command("vm", "detach-volume", arg("vm"), arg("volume"))
async def vm_detach_volume(c, a):
    """detach a data volume"""
    return await c.delete(f"/v1/vms/{a.vm}/volumes/{a.volume}")


@command("vm", "console", arg("vm"))
async def vm_console(c, a):
    """console address: host, port, protocol"""
    return await c.get(f"/v1/vms/{a.vm}/console")


@command("vm", "migrate", arg("vm"), arg("host"))
async def vm_migrate(c, a):
    """move a VM to another host"""
    return await c.post(f"/v1/vms/{a.vm}/migrate", {"host_uuid": a.host})


# tags, configs, EIPs -----------------------------------------------------------------------------
@command("tag", "create", arg("resource"), arg("tag"))
async def tag_create(c, a):
    """CreateSystemTag on a VM"""
    return await c.post("/v1/system-tags", {"resource_uuid": a.resource, "tag": a.tag})


@command("tag", "update", arg("uuid"), arg("tag"))
async def tag_update(c, a):
    """UpdateSystemTag"""
    return await c.put(f"/v1/system-tags/{a.uuid}", {"tag": a.tag})


@command("tag", "delete", arg("uuid"))
async def tag_delete(c, a):
    """DeleteSystemTag"""
    return await c.delete(f"/v1/system-tags/{a.uuid}")


@command("tag", "query", arg("--resource"), arg("--like", help="e.g. userdata%"))
async def tag_query(c, a):
    """QuerySystemTag resourceUuid= tag~="""
    params = {k: v for k, v in (("resourceUuid", a.resource), ("tag~", a.like)) if v}
    return await c.get("/v1/system-tags", **params)


@command("config", "list")
async def config_list(c, a):
    """global configs"""
    return await c.get("/v1/global-configs")


@command("config", "set", arg("category"), arg("name"), arg("value"))
async def config_set(c, a):
    """UpdateGlobalConfig category name value"""
    return await c.put(f"/v1/global-configs/{a.category}/{a.name}", {"value": a.value})


@command("eip", "create", arg("name"), arg("--l3", required=True, help="public L3"), arg("--vip"))
async def eip_create(c, a):
    """allocate an EIP"""
    return await c.post("/v1/eips", {"name": a.name, "public_l3_uuid": a.l3, "vip": a.vip})


@command("eip", "list")
async def eip_list(c, a):
    """EIPs"""
    return await c.get("/v1/eips")


@command("eip", "attach", arg("eip"), arg("vm"), arg("--nic"))
async def eip_attach(c, a):
    """attach an EIP to a VM NIC"""
    return await c.post(f"/v1/eips/{a.eip}/attach", {"vm_uuid": a.vm, "nic_uuid": a.nic})


@command("eip", "detach", arg("eip"))
async def eip_detach(c, a):
    """detach an EIP"""
    return await c.post(f"/v1/eips/{a.eip}/detach")


@command("eip", "delete", arg("eip"))
async def eip_delete(c, a):
    """delete an EIP"""
    return await c.delete(f"/v1/eips/{a.eip}")


# agent deploys (coordinator/deploycli.py) ---------------------------------------------------------
for _verb, _handler, _args in deploycli.COMMANDS:
    command("deploy", _verb, *_args)(_handler)


# plumbing ----------------------------------------------------------------------------------------
def _pair(text: str, flag: str) -> tuple[str, str]:
    k, sep, v = text.partition("=")
    if not sep:
        raise CliError(f"{flag} {text!r}: expected KEY=VALUE")
    return k, v


def _dig(row: dict, path: str) -> object:
    cur: object = row
    for part in path.split("."):
        if isinstance(cur, list):
            cur = cur[int(part)] if part.isdigit() and int(part) < len(cur) else None
        elif isinstance(cur, dict):
            cur = cur.get(part)
        else:
            return None
    return cur


def render(result: object) -> str:
    """A table for lists, `key: value` lines for one object."""
    if result is None:
        return "ok"
    if isinstance(result, str):  # already lines (deploys print one per host)
        return result
    if isinstance(result, dict) and len(result) == 1 and isinstance(next(iter(result.values())), list):
        name, rows = next(iter(result.items()))
        cols = COLUMNS.get(name) or (list(rows[0]) if rows else [])
        table = [cols] + [[_cell(_dig(r, c)) for c in cols] for r in rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table)
    if isinstance(result, dict):
        return "\n".join(f"{k}: {_cell(v)}" for k, v in result.items())
    return json.dumps(result, indent=2)


def _cell(v: object) -> str:
    if isinstance(v, list):
        return ",".join(_cell(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"))
    return "-" if v is None else str(v)


def _defaults() -> dict:
    path = Path(os.environ.get("HS_CLI_CONFIG", "/etc/hoststack/cli.toml"))
    return tomllib.loads(path.read_text()) if path.exists() else {}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hs", description="HostStack command line")
    p.add_argument("--url", help="coordinator URL (env HS_URL)")
    p.add_argument("--token", help="admin token (env HS_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    groups = p.add_subparsers(dest="group", required=True, metavar="RESOURCE")
    subs: dict[str, argparse._SubParsersAction] = {}
    for (group, verb), (_, args, help_) in COMMANDS.items():
        if group not in subs:
            subs[group] = groups.add_parser(group).add_subparsers(dest="verb", required=True, metavar="VERB")
        sp = subs[group].add_parser(verb, help=help_)
        for names, kw in args:
            sp.add_argument(*names, **kw)
    return p


async def _run(a: argparse.Namespace) -> object:
    conf = _defaults()
    url = a.url or os.environ.get("HS_URL") or conf.get("url", "http://127.0.0.1:8740")
    token = a.token or os.environ.get("HS_TOKEN") or conf.get("token")
    if not token:
        raise CliError("no admin token: pass --token, set HS_TOKEN or write /etc/hoststack/cli.toml")
    async with Client(url, token) as c:
        return await COMMANDS[(a.group, a.verb)][0](c, a)


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    try:
        result = asyncio.run(_run(a))
    except ApiClientError as e:
        field = f" (field {e.field})" if e.field else ""
        sys.exit(f"hs: {e.message}{field}")
    except (CliError, deploycli.DeployCliError) as e:
        sys.exit(f"hs: {e}")
    except OSError as e:
        sys.exit(f"hs: cannot reach the coordinator: {e}")
    print(json.dumps(result, indent=2) if a.json else render(result))


if __name__ == "__main__":
    main()
