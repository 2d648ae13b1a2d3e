"""The text a deploy writes on a host: the agent's TOML config, its systemd unit, its supervisor script.

Rendered on the controller so their digests can be compared with the host's stamp before anything
is sent. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json

from deployer.agentspec import AgentSpec

SUPERVISOR = """\
#!/bin/sh
# Keeps the HostStack {name} running on a host without systemd. Written by the deployer, which
# starts it in its own session and records its pid in {pidfile}; SIGTERM to the group stops both.
mkdir -p {logdir}
child=
trap 'if [ -n "$child" ]; then kill -TERM "$child"; wait "$child"; fi; exit 0' TERM INT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"  # as the systemd unit's LimitNOFILE
while :; do
    {command} >>{log} 2>&1 &
    child=$!
    wait "$child"
    child=
    sleep 2
done
"""

UNIT = """\
[Unit]
Description={description}
After={after}
Wants=network-online.target

[Service]
ExecStart={command}
Restart=always
RestartSec=2
# guests' connections to the flat services take descriptors (systemd's default soft limit is 1,024)
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def config_toml(values: dict[str, str | int | bool]) -> str:
    """Flat TOML; a JSON string literal is a valid TOML basic string."""
    lines = ["# Written by the HostStack deployer; a redeploy replaces it."]
    for key, value in values.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def agent_config(spec: AgentSpec, coordinator_url: str, host_uuid: str, host_token: str) -> str:
    """The agent's settings the deploy owns, under the names its settings model (agentkit.config) loads."""
    values = {"coordinator_url": coordinator_url, "host_uuid": host_uuid, "host_token": host_token}
    return config_toml({key: values[source] for key, source in spec.config_keys})


def systemd_unit(spec: AgentSpec) -> str:
    return UNIT.format(description=spec.description, after=" ".join(spec.after), command=spec.command)


def supervisor_script(spec: AgentSpec) -> str:
    logdir = spec.log.rsplit("/", 1)[0]
    return SUPERVISOR.format(name=spec.name, pidfile=spec.pidfile, logdir=logdir, command=spec.command, log=spec.log)
