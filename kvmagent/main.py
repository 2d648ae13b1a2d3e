"""`kvmagent`: the KVM host agent process, and its composition root.

Builds every component from the settings, connects to the coordinator and libvirt, and serves the
agent API. Nothing connects at import time. Every long-lived task (the link, the libvirt start, one
actor per component) runs under one `Supervisor`: a task that dies of a bug takes the process down
(exit code 70 within a second) so its supervisor (systemd) restarts it; bugs are not swallowed.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import logging
import os
import resource
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import aiohttp
import libvirt
from aiohttp import web

from agentkit import config, dirlock, identity, tls
from agentkit import netns as agentnetns
from agentkit.consoles import ConsoleKind
from agentkit.fairness.fdlimit import fd_share
from agentkit.journal import Journal
from agentkit.link import Link, LinkError
from agentkit.supervise import Supervisor, exit_process
from agentkit.web import run_app
from flatnet import metrics as flatnet_metrics
from flatnet.antispoof import Antispoof
from flatnet.eip import EipDataplane
from flatnet.metadata.server import MetadataService
from flatnet.service import FlatnetService
from kvmagent import api, facts
from kvmagent.agent import Component, Reconciler, Reporter
from kvmagent.bridges import Bridges, BridgesComponent
from kvmagent.components import (
    FAULT_ENV,
    AntispoofComponent,
    EipComponent,
    FlatnetComponent,
    PreparedComponent,
    VmsComponent,
)
from kvmagent.domain_xml import console_socket
from kvmagent.errors import DriverError
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.secrets import SecretsComponent
from kvmagent.settings import KvmAgentSettings
from kvmagent.storage import LibvirtHolders, StorageComponent, Tickets
from kvmagent.vms import VmReconciler

API_SHARE = 0.125  # of the descriptors, for the agent's API (agentkit.edge): the guests' services take theirs

log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    v = libvirt.getVersion()
    return {"libvirt": f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}", "python": sys.version.split()[0]}


async def agent_ctx(app: web.Application, settings: KvmAgentSettings,
                    listener: ssl.SSLContext | None) -> AsyncIterator[None]:
    """Start the pipeline with the web app; stop it (components keep the dataplane) on shutdown. With a
    `listener` context and no certificate of the operator's, the agent keeps its own certificate in it."""
    state = Path(settings.state_dir)
    journal = Journal(state / "journal")
    report = Reporter(journal)
    driver = LibvirtDriver(settings.libvirt_uri)
    bridges = BridgesComponent(Bridges())
    tickets = Tickets(settings.coordinator_url, lambda: link.token)
    storage = StorageComponent(settings.storage, settings.host_uuid, settings.host_name, LibvirtHolders(driver), report,
                               tickets.locate, upload_to=tickets.upload_target, volume_ticket=tickets.volume,
                               ssl=tls.client(settings.tls))
    app[api.VOLUMES].layouts = storage.layouts
    vms = VmReconciler(driver, bridges, settings.vm, report, storages=storage)
    storage.listeners.append(vms.storage_changed)
    components: list[Component] = [bridges, storage, SecretsComponent(driver),
                                   *vm_components(app, settings, vms, report, lambda name: reconciler.poke(name))]
    components.append(PreparedComponent(tuple(c.name for c in components if c.name != VmsComponent.name),
                                        lambda name: reconciler.stats.applied.get(name, -1), report))
    reconciler = Reconciler(components, settings.resync_interval,
                            health=lambda errors: report("health", settings.host_uuid, {"errors": errors}))
    storage.wake = lambda: reconciler.poke(storage.name)
    configured = settings.host_token.get_secret_value()
    link = Link(settings.coordinator_url, settings.host_uuid, identity.current_token(state, configured),
                journal, lambda: facts.gather(settings.vm.host_address, versions()), reconciler.on_state,
                ssl=tls.client(settings.tls), on_token=lambda t: identity.keep_token(state, configured, t),
                on_connect=reconciler.retell_health)
    app[api.RECONCILER], app[api.LINK] = reconciler, link

    async def reapply() -> None:
        """After a libvirtd reconnect every component applies the view again (the VMs resync themselves)."""
        reconciler.poke()

    async def start_libvirt() -> None:
        """libvirtd may come up after the agent: the host is Connected meanwhile, VMs wait."""
        await driver.connect()
        await vms.start()
        driver.on_reconnect(reapply)
        try:
            await vms.resync()
        except DriverError as e:  # lost again at once: the reconnect resyncs
            log.warning("first VM resync failed: %s", e)
        reconciler.poke()

    tasks = Supervisor()
    tasks.start(journal.run(), name="journal")
    tasks.start(link.run(), name="link")
    if listener is not None and settings.tls.cert is None:
        failures = (aiohttp.ClientError, OSError, TimeoutError, LinkError)
        cert = identity.Certificate(settings.tls_dir, "kvmagent")
        tasks.start(cert.keep(listener, link.certificate, failures), name="certificate")
    reconciler.start(tasks)
    storage.start()
    tasks.start(start_libvirt(), name="libvirt")
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    yield
    await tasks.stop()
    await reconciler.close()
    await driver.close()


def vm_components(app: web.Application, settings: KvmAgentSettings, vms: VmReconciler, report: Reporter,
                  poke: Callable[[str], None]) -> list[Component]:
    """The VMs' component after the taps' anti-spoofing (always: without it a guest's NICs would go
    unfiltered) and, with the network services, the flat services and EIPs around it; `poke(name)` asks the
    reconciler for a pass of one component."""
    fault = os.environ.get(FAULT_ENV)
    antispoof = Antispoof()
    guarded: list[Component] = [AntispoofComponent(antispoof, vms),
                                VmsComponent(vms, fault, after=("bridges", "storage", "antispoof"))]
    guest_metrics: Callable[[], Awaitable[list[str]]] = partial(flatnet_metrics.prometheus, antispoof)
    app[api.GUEST_METRICS] = guest_metrics
    if not settings.network_services:
        return guarded
    metadata = MetadataService(settings.metadata)
    flatnet = FlatnetService(settings.flatnet, plugins=[metadata], report=report)
    eips = EipComponent(EipDataplane(settings.eip), verify_every=settings.resync_interval)
    vms.observer.gone, vms.observer.back = eips.withdraw, eips.restore
    eips.wake = lambda: poke(eips.name)
    with_services: Callable[[], Awaitable[list[str]]] = partial(flatnet_metrics.prometheus, antispoof, flatnet,
                                                                 metadata)
    app[api.GUEST_METRICS] = with_services
    return [*guarded, FlatnetComponent(flatnet), eips]


def _dump_tasks() -> None:
    """SIGUSR1: log where every asyncio task is waiting (for an operator chasing a stuck agent)."""
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(file=out)
        log.warning("task %s: %s", task.get_name(), out.getvalue())


def console_sockets(console_dir: str) -> Callable[[str, ConsoleKind], Path | None]:
    """Where libvirt put a VM's console `kind` (see domain_xml), when it is there."""
    def locate(vm: str, kind: ConsoleKind) -> Path | None:
        path = Path(console_socket(console_dir, vm, kind))
        return path if path.is_socket() else None
    return locate


def build_app(settings: KvmAgentSettings, listener: ssl.SSLContext | None = None) -> web.Application:
    app: web.Application = api.make_app(config.revealed(settings.api_token), config.revealed(settings.metrics_token),
                                        console_sockets(settings.vm.console_dir), lambda: app[api.LINK].token)
    app.cleanup_ctx.append(lambda a: agent_ctx(a, settings, listener))
    return app


def raise_fd_limit() -> None:
    """Take the hard descriptor limit as the soft one: guests' connections come out of it (the flat services
    keep a share of what they find, and survive exhaustion anyway)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    settings = config.from_command_line(KvmAgentSettings, "kvmagent", "HostStack KVM host agent", argv)
    dirlock.hold(Path(settings.state_dir), "kvmagent")  # a second agent on the host ends here
    try:
        listener = identity.listener(settings.tls, "kvmagent", settings.tls_dir, settings.coordinator_url)
    except tls.TlsError as e:
        sys.exit(f"kvmagent: {e}")
    raise_fd_limit()
    agentnetns.install()  # namespace sockets without forking this threaded process
    faulthandler.enable()  # a crash in a C extension (libvirt, pyroute2) leaves its stacks in the log
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # thread stacks even when the loop is stuck
    run_app("kvmagent", build_app(settings, listener), settings.listen, settings.port, shutdown_timeout=2,
            ssl_context=listener, max_connections=fd_share(API_SHARE))
    # Stopped: every component closed and the loop too. A libvirt call that outlived the driver's close grace
    # (a live migration, which libvirtd carries on) must not hold the exit, nor return into libvirtaio on
    # the closed loop: leave without joining the pool's threads.
    exit_process(0)


if __name__ == "__main__":
    main()
