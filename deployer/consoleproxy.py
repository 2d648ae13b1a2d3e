"""The consoleproxy deployer: the console proxy on control nodes (several may run).

The pages it serves import Debian's noVNC (`novnc`), term.js (`libjs-term.js`) and spice-html5 from
where Debian installs them; its Python side needs aiohttp, pydantic and cryptography (TLS). It registers
with the coordinator like an agent (connect with its version, heartbeats) with the host token of its
`consoleproxy` host record; its /metrics takes the scrapers' `metrics_token`, as a kvmagent's does.
"""

from deployer.agentspec import AgentSpec

SPEC = AgentSpec(
    name="consoleproxy",
    description="HostStack console proxy",
    packages=("novnc", "libjs-term.js", "spice-html5", "python3", "python3-venv"),
    requirements=("aiohttp", "pydantic", "cryptography"),
    config_keys=(("coordinator_url", "coordinator_url"), ("uuid", "host_uuid"), ("token", "host_token"),
                 ("metrics_token", "metrics_token")),
    renews_token=True,
)
