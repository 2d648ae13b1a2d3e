"""`hs vm …`: create VMs, change their power state, NICs, media, modes and volumes, find their console, move them.

Commands that take `--wait` print the VM as `hs vm show` does, once its host reports the result (with
`pending: …` when the wait ran out first, and then exit status 1 with a line saying that it goes on).
"""

from __future__ import annotations

import argparse

from coordinator.cli import consolebridge
from coordinator.cli.command import Command, Group
from coordinator.cli.commands.ceph import seconds, size
from coordinator.cli.commands.images import IMAGE
from coordinator.cli.commands.resources import HOST, L3, PRIMARY_STORAGE, VM, VM_NAMES
from coordinator.cli.declare import Call, Const, Nested, Source, arg
from coordinator.cli.session import Session


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def comma_list(text: str) -> list[str]:
    return text.split(",")


def memory(text: str) -> int:
    """`--memory`: MiB from a plain number (as it always took), else a size as `--size` takes it (`2G`), whole MiB."""
    if text.isdecimal():
        return int(text)
    try:
        mib, rest = divmod(size(text), 1 << 20)
    except argparse.ArgumentTypeError:
        mib, rest = 0, 1  # no size at all: refused as one that is no whole MiB
    if rest:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MiB (a number) or a whole number of MiB with a K, M, "
                                         "G or T suffix (2G)")
    return mib


VM_ARG = arg("vm", ref=VM)
OPEN_CONSOLE = Call("POST", "/v1/vms/{vm}/console", body={"kind": "kind"})
CONSOLE_INFO = Call("GET", "/v1/vms/{vm}/console")


async def open_console(s: Session, a: argparse.Namespace) -> object:
    """The URL alone (what a person pastes into a browser), or the whole answer with --json; with --listen,
    the port native clients connect to, until Ctrl-C."""
    if a.listen is not None:
        await listen(s, a)  # until Ctrl-C interrupts the run
        return None
    got = await s.send(OPEN_CONSOLE, a)
    return got if a.json else got["url"]


async def listen(s: Session, a: argparse.Namespace) -> None:
    """Relay the clients that connect to `--listen` to the VM's screen (consolebridge)."""
    kind = (await s.send(CONSOLE_INFO, a))["protocol"]
    urls = consolebridge.Urls(lambda: s.send(OPEN_CONSOLE, a, kind=kind))
    await urls.url()  # the VM runs and a console proxy is there: said now, not at the first connection
    bridge = consolebridge.Bridge(urls, s.client.ca)
    await bridge.serve(a.listen, lambda address: consolebridge.announce(kind, address, a.json))


WAIT = arg("--wait", type=seconds, help="seconds to wait for the host to report the result (exit status 1 if it "
          "does not in time; the change goes on)")
WAITING = {"wait": "wait"}

SPEC: dict[str, Source] = {
    "name": "name", "l3_network_uuids": "l3", "default_l3_uuid": "default_l3", "host_uuid": "host", "cpu": "cpu",
    "memory_mb": "memory", "state": "state", "iso_uuid": "iso", "iso_path": "iso_path", "system_tags": "tag",
    "image_uuid": "image", "primary_storage_uuid": "primary_storage", "root_size": "root_size",
    "data_disks": "data_disk",
    "kernel": Nested({"kernel": "kernel", "initrd": "initrd", "cmdline": "cmdline"}, when=("kernel",)),
    "root_volume": Nested({"kind": Const("file"), "path": "root_disk", "backing": "root_backing",
                           "storage_uuid": "primary_storage"}, when=("root_disk",))}
CREATE = Call("POST", "/v1/vms", query=WAITING, once=True,
              body={**SPEC, "fixed_ips": lambda a: dict(a.fixed_ips)})  # errors about it name --ip (its dest)
CREATE_BATCH = Call("POST", "/v1/vms/batch", body={**SPEC, "count": "count"})
COLUMNS = ("uuid", "spec.name", "host", "spec.state", "observed.state", "spec.nics.0.ip")  # VMs as a table

SPEC_ARGS = (arg("--l3", action="append", default=[], ref=L3), arg("--default-l3", ref=L3), arg("--host", ref=HOST),
             arg("--cpu", type=int, default=1, help="virtual CPUs (default 1)"),
             arg("--memory", type=memory, default=256, help="MiB (default 256), or with a unit: 512M, 2G"),
             arg("--stopped", dest="state", action="store_const", const="Stopped", default="Running"),
             arg("--image", ref=IMAGE, help="root volume from this image"),
             arg("--primary-storage", ref=PRIMARY_STORAGE, help="where its volumes go (default: the only one)"),
             arg("--root-size", type=size, help="e.g. 20G (at least the image's size)"),
             arg("--data-disk", action="append", default=[], type=size, help="a blank data volume (10G); repeatable"),
             arg("--iso", ref=IMAGE, help="install from this ISO image: CdRom first, HardDisk after the first reboot"),
             arg("--kernel", help="boot this kernel (a path on the host) instead of a disk"),
             arg("--initrd", help="the kernel's initrd (a path on the host)"),
             arg("--cmdline", default="", help="the kernel's command line"),
             arg("--root-disk", help="expert: a raw qcow2 path in --primary-storage's directory (else the agent's)"),
             arg("--root-backing", help="expert: the backing file of --root-disk"),
             arg("--iso-path", help="expert: a raw ISO path on the host"),
             arg("--tag", action="append", default=[], help="a system tag (userdata::…, sshkey::…); repeatable"))

GROUP = Group("vm", "virtual machines: create, power, media, volumes, console, migrate", (
    Command("create", "create a VM", CREATE, arg("name"), *SPEC_ARGS,
            arg("--ip", action="append", default=[], type=key_value, ref=L3, dest="fixed_ips",
                help="L3=IP, repeatable; the L3"), WAIT,
            names=VM_NAMES),
    Command("create-batch", "create COUNT VMs alike in one transaction, all or none (NAME-1 … NAME-COUNT)",
            CREATE_BATCH, arg("name"), arg("count", type=int), *SPEC_ARGS, columns=COLUMNS, names=VM_NAMES),
    Command("list", "VMs with desired and observed state", Call("GET", "/v1/vms", query={"host_uuid": "host"}),
            arg("--host", ref=HOST, help="only the VMs placed on this host"),
            columns=COLUMNS, names=VM_NAMES),
    Command("show", "one VM", Call("GET", "/v1/vms/{vm}"), VM_ARG, names=VM_NAMES),
    Command("destroy", "destroy a VM (completes on its host, also after the host comes back)",
            Call("DELETE", "/v1/vms/{vm}", query=WAITING), VM_ARG, WAIT, names=VM_NAMES),
    *(Command(verb, f"{verb} a VM", Call("POST", "/v1/vms/{vm}/actions", body={"action": Const(verb)},
                                         query=WAITING, idempotent=verb != "reboot"), VM_ARG, WAIT, names=VM_NAMES)
      for verb in ("start", "stop", "reboot", "pause", "resume")),
    Command("attach-iso", "insert an ISO image (fetched into the host's cache); the boot order stays",
            Call("PUT", "/v1/vms/{vm}/cdrom", body={"iso_uuid": "iso"}), VM_ARG, arg("iso", ref=IMAGE), names=VM_NAMES),
    Command("detach-iso", "eject the VM's ISO", Call("PUT", "/v1/vms/{vm}/cdrom", body={}), VM_ARG, names=VM_NAMES),
    Command("cdrom", "expert: insert a raw ISO path on the host (or --eject)",
            Call("PUT", "/v1/vms/{vm}/cdrom", body={"iso_path": "iso"}),
            VM_ARG, arg("iso", nargs="?", exclusive="cdrom", help="ISO path on the host"),
            arg("--eject", action="store_true", exclusive="cdrom"), names=VM_NAMES),
    Command("boot-order", "set the boot order", Call("PUT", "/v1/vms/{vm}/boot-order", body={"order": "order"}),
            VM_ARG, arg("order", type=comma_list, help="e.g. CdRom,HardDisk"), names=VM_NAMES),
    Command("get-boot-order", "the boot order the VM boots in (after an ISO install: HardDisk first)",
            Call("GET", "/v1/vms/{vm}/boot-order"), VM_ARG),
    Command("attach-nic", "attach a NIC on an L3 (live when the VM runs; its guest leases the address)",
            Call("POST", "/v1/vms/{vm}/nics", body={"l3_uuid": "l3", "ip": "ip", "mac": "mac"}, query=WAITING),
            VM_ARG, arg("--l3", required=True, ref=L3), arg("--ip", help="default: the next free address"),
            arg("--mac", help="default: random fa:16:3e:…"), WAIT, names=VM_NAMES),
    Command("detach-nic", "detach a NIC; its address, MAC, DNS record and DHCP reservation are released",
            Call("DELETE", "/v1/vms/{vm}/nics/{l3}"), VM_ARG, arg("l3", ref=L3, help="the L3 the NIC is on"),
            names=VM_NAMES),
    Command("modes", "per-VM cpu/cache/console modes",
            Call("PATCH", "/v1/vms/{vm}", body={"cpu_mode": "cpu_mode", "cache_mode": "cache_mode",
                                               "console_mode": "console_mode"}),
            VM_ARG, arg("--cpu-mode"), arg("--cache-mode"), arg("--console-mode"), names=VM_NAMES),
    Command("attach-volume", "attach a qcow2 data volume (created if missing)",
            Call("POST", "/v1/vms/{vm}/volumes",
                 body={"disk": Nested({"kind": Const("file"), "path": "path", "size_bytes": "size"})}),
            VM_ARG, arg("path"),
            arg("--size", type=size, default=1 << 30, help="if it is made: e.g. 10G (default 1G)"), names=VM_NAMES),
    Command("detach-volume", "detach a data volume", Call("DELETE", "/v1/vms/{vm}/volumes/{volume}"),
            VM_ARG, arg("volume", help="the volume's uuid"), names=VM_NAMES),
    Command("console", "a console URL to open in a browser (through a console proxy; it works for a minute), or "
            "with --listen a port for native VNC/SPICE clients", open_console, VM_ARG,
            arg("--browser", dest="kind", action="store_const", const=None, alternative="console",
                help="the screen: noVNC (VNC) or SPICE, as the VM has (the default)"),
            arg("--serial", dest="kind", action="store_const", const="serial", alternative="console",
                help="the serial port, in a terminal page"),
            arg("--listen", type=consolebridge.listen_address, alternative="console", metavar="[ADDR:]PORT",
                help="the screen for native clients (remote-viewer, vncviewer): relay each connection to ADDR:PORT "
                "(ADDR 127.0.0.1 unless given; PORT 0 picks a free one) to the VM's VNC or SPICE console until "
                "Ctrl-C. Anyone who can reach ADDR:PORT gets the console, with no password: give another ADDR "
                "than a loopback one only where that is what you want")),
    Command("console-info", "the VM's consoles (protocol, kinds) and its host", CONSOLE_INFO, VM_ARG),
    Command("migrate", "move a VM to another host: cold (stopped; LocalStorage volumes are copied first), or "
            "--live (running, on shared storage)",
            Call("POST", "/v1/vms/{vm}/migrate", body={"host_uuid": "host", "live": "live"}),
            VM_ARG, arg("host", ref=HOST), arg("--live", action="store_true", default=None,
                                               help="keep it running (SharedMountPoint or Ceph storage)"),
            names=VM_NAMES),
    Command("cancel-migration", "call off a live migration: the VM stays where it runs (at once while its target "
            "has not prepared; after that once its host stopped sending it, unless it arrived first)",
            Call("DELETE", "/v1/vms/{vm}/migrate"), VM_ARG,
            names=VM_NAMES),
))
