"""A console proxy process in a network namespace of its own, registered as a `consoleproxy` host.

It reaches the coordinator through a portal (a loopback port of its namespace relayed to the coordinator's),
as a control node reaches its management network, and listens on `port` (default `PORT`) of its namespace's
addresses, where users (other namespaces on its switch) reach it. With a coordinator over TLS the proxy is
too: it verifies the coordinator and the hosts' tunnels with the run's CA and serves https/wss with the
certificate it asks the coordinator for (which names its registered address). Scrapers of its /metrics
present `metrics_token`.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass, field

from testbed.coordinators import Coordinator
from testbed.netns import Netns, Run
from testbed.pki import PLAIN
from testbed.ports import free_port

PORT = 8743  # in the proxy's own namespace: no other process of the machine competes for it


@dataclass
class ProxyHost:
    run: Run
    ns: Netns
    address: str
    port: int = PORT
    uuid: str = ""
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None
    portal: subprocess.Popen[bytes] | None = None
    metrics_token: str = field(default_factory=lambda: "scraper-" + secrets.token_hex(12))

    def start(self, coordinator: Coordinator) -> None:
        inner = free_port()
        self.portal = self.run.popen([sys.executable, "-m", "testbed.portal", self.ns.name, str(inner),
                                      str(coordinator.port)], log_name="proxy-portal")
        scheme, tls = ("https", json.dumps({"ca": str(coordinator.ca)})) if coordinator.ca else ("http", PLAIN)
        env = {"HS_CONSOLEPROXY_CONFIG": "/nonexistent", "HS_CONSOLEPROXY_COORDINATOR_URL": f"{scheme}://127.0.0.1:{inner}",
               "HS_CONSOLEPROXY_UUID": self.uuid, "HS_CONSOLEPROXY_TOKEN": self.token,
               "HS_CONSOLEPROXY_PORT": str(self.port), "HS_CONSOLEPROXY_TLS": tls,
               "HS_CONSOLEPROXY_METRICS_TOKEN": self.metrics_token,
               "HS_CONSOLEPROXY_STATE_DIR": str(self.run.path(f"{self.ns.name}-state"))}
        self.proc = self.ns.popen([sys.executable, "-m", "consoleproxy.main"], log_name="consoleproxy", env=env)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye to the coordinator."""
        assert self.proc is not None
        self.run.kill(self.proc)
