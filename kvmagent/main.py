"""`kvmagent`: the KVM host agent process, and its composition root.

Builds every component from the settings, connects to the coordinator and libvirt, and serves the
agent API. Nothing connects at import time; a component task that dies takes the process down so
the supervisor restarts it (bugs crash, they are not swallowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import io
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import libvirt
from aiohttp import web

from agentkit import config
from agentkit import netns as agentnetns
from agentkit.journal import Journal
from agentkit.link import Link
from flatnet.antispoof import Antispoof
from flatnet.eip import EipDataplane
from flatnet.metadata.server import MetadataService
from flatnet.service import FlatnetService
from kvmagent import api, facts
from kvmagent.agent import Component, Reconciler, Reporter
from kvmagent.bridges import Bridges
from kvmagent.components import (
    AntispoofComponent,
    EipComponent,
    FlatnetComponent,
    VmsComponent,
)
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.secrets import SecretsComponent
from kvmagent.settings import KvmAgentSettings
from kvmagent.vms import VmReconciler

log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    v = libvirt.getVersion()
    return {"libvirt": f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}", "python": sys.version.split()[0]}


async def agent_ctx(app: web.Application, settings: KvmAgentSettings) -> AsyncIterator[None]:
    """Start the pipeline with the web app; stop it (components keep the dataplane) on shutdown."""
    state = Path(settings.state_dir)
    journal = Journal(state / "journal")
    report = Reporter(journal)
    driver = LibvirtDriver(settings.libvirt_uri)
    vms = VmReconciler(driver, Bridges(), settings.vm, report)
    components: list[Component] = [SecretsComponent(driver), VmsComponent(vms)]
    if settings.network_services:
        metadata = MetadataService(settings.metadata)
        components += [AntispoofComponent(Antispoof()),
                       FlatnetComponent(FlatnetService(settings.flatnet, plugins=[metadata], report=report)),
                       EipComponent(EipDataplane(settings.eip))]
    reconciler = Reconciler(components, settings.resync_interval)
    link = Link(settings.coordinator_url, settings.host_uuid, settings.host_token, journal,
                lambda: facts.gather(settings.vm.host_address, versions()), reconciler.on_state)
    app[api.RECONCILER], app[api.LINK] = reconciler, link

    async def start_libvirt() -> None:
        """libvirtd may come up after the agent: the host is Connected meanwhile, VMs wait."""
        await driver.connect()
        await vms.start()
        driver.on_reconnect(reconciler.poke)
        await vms.resync()
        reconciler.poke()

    tasks = [asyncio.create_task(link.run(), name="link"), asyncio.create_task(reconciler.run(), name="reconcile"),
             asyncio.create_task(start_libvirt(), name="libvirt")]
    for t in tasks:
        t.add_done_callback(_die_on_crash)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    yield
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    await reconciler.close()
    await driver.close()


def _dump_tasks() -> None:
    """SIGUSR1: log where every asyncio task is waiting (for an operator chasing a stuck agent)."""
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(file=out)
        log.warning("task %s: %s", task.get_name(), out.getvalue())


def _die_on_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception():
        log.critical("task %s crashed: %r; exiting for a restart", task.get_name(), task.exception())
        sys.exit(1)


def build_app(settings: KvmAgentSettings) -> web.Application:
    app = web.Application(middlewares=[api.auth])
    app[api.TOKEN] = settings.host_token
    app.router.add_get("/health", api.health)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/v1/state", api.state)
    app.cleanup_ctx.append(lambda a: agent_ctx(a, settings))
    return app


def main(argv: list[str] | None = None) -> None:
    settings = config.from_command_line(KvmAgentSettings, "kvmagent", "HostStack KVM host agent", argv)
    agentnetns.install()  # namespace sockets without forking this threaded process
    faulthandler.enable()  # a crash in a C extension (libvirt, pyroute2) leaves its stacks in the log
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # thread stacks even when the loop is stuck
    web.run_app(build_app(settings), host=settings.listen, port=settings.port, shutdown_timeout=2,
                print=None, access_log=None)


if __name__ == "__main__":
    main()
