"""`hs-ctl status`: one line per thing an operator checks on a control node.

The services (running or not), what the coordinator's `/health` says, and from etcd: the data's
schema version and the newest backup with its age. Each part that cannot be asked says why instead;
nothing here changes anything.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

from agentkit.errors import HostStackError
from agentkit.tls import TlsError
from agentkit.tls import client as tls_client
from coordinator.ctl import layout, node, schedule, services
from coordinator.ctl.settings import CtlSettings
from coordinator.domain import backups, schema
from coordinator.etcd import keys


def _coordinator(s: CtlSettings) -> str:
    try:
        url = services.health_url(s, node.COORDINATOR)
        tls = services.coordinator_settings(s).tls
    except HostStackError as e:  # its settings cannot be read: where it listens is not known
        return f"cannot ask it: {e}"
    try:
        context = tls_client(tls)
        with urllib.request.urlopen(url, timeout=3, context=context) as r:  # noqa: S310 - the node's own URL
            h = json.loads(r.read())
    except (OSError, ValueError, TlsError) as e:
        return f"no answer at {url}: {e}"
    return f"{h.get('status')} at {url}: version {h.get('version')}, replica {h.get('replica')}, " \
        f"{'leads' if h.get('leader') else 'does not lead'}"


async def _etcd(s: CtlSettings) -> list[str]:
    store = services.store(s)
    await store.connect()
    try:
        found = await schema.read(store)
        last = await backups.last(store)
        count = await store.count(keys.ROOT)
    finally:
        await store.close()
    age = f"{(time.time() - last.at) / 3600:.1f} h ago: {last.file} on {last.node}" if last else "none recorded"
    return [f"etcd: {count} keys; data schema {found.version} ({', '.join(found.names) or 'no migrations'})",
            f"newest backup: {age}"]


def _schedule() -> str:
    if services.systemd():
        timer = schedule.TIMER_PATH
        return f"scheduled backups: systemd timer {timer}" if Path(timer).exists() else "scheduled backups: none"
    return f"scheduled backups: {layout.CRON_FILE}" if layout.CRON_FILE.exists() else "scheduled backups: none"


def report(s: CtlSettings) -> str:
    lines = [f"{svc.name}: {'running' if services.running(svc) else 'not running'}" for svc in node.SERVICES]
    lines.append(f"coordinator: {_coordinator(s)}")
    try:
        lines += asyncio.run(asyncio.wait_for(_etcd(s), 15))
    except (HostStackError, TimeoutError, OSError) as e:  # OSError: the TLS files its settings name
        lines.append(f"etcd: cannot ask it: {str(e) or 'no answer in 15 s'}")  # a timeout says nothing itself
    lines.append(_schedule())
    return "\n".join(lines)
