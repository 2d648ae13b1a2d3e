"""The text a deploy writes on a host: the agent's TOML config, its systemd unit, its supervisor script.

Rendered on the controller so their digests can be compared with the host's stamp before anything
is sent. Nothing here does I/O. A unit and the supervisor script run the same command line.
"""

from __future__ import annotations

import hashlib
import json

from deployer.agentspec import AgentSpec
from deployer.service import Service

SUPERVISOR = """\
#!/bin/sh
# Keeps the HostStack {name} running on a host without systemd. Written by the deployer, which
# starts it in its own session and records its pid in {pidfile}; SIGTERM to the group stops both.
mkdir -p {logdir}
child=
trap 'if [ -n "$child" ]; then kill -TERM "$child"; wait "$child"; fi; exit 0' TERM INT
ulimit -n {nofile} 2>/dev/null || ulimit -n "$(ulimit -Hn)"  # as the systemd unit's LimitNOFILE
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
{unit_extra}
[Service]
Type={type}
{service_extra}ExecStart={command}
Restart=always
RestartSec=2
# guests' connections to the flat services take descriptors (systemd's default soft limit is 1,024)
LimitNOFILE={nofile}
{sandbox}
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


def directives(pairs: tuple[tuple[str, str], ...]) -> str:
    """systemd `Key=value` lines."""
    return "".join(f"{k}={v}\n" for k, v in pairs)


def systemd_unit(s: Service) -> str:
    unit_extra = directives(tuple(("Conflicts", c) for c in s.conflicts))
    service_extra = directives((("User", s.user), ("Group", s.user)) if s.user else ())
    sandbox = (*s.sandbox, *(("ReadWritePaths", p) for p in s.writable))
    return UNIT.format(description=s.description, after=" ".join(s.after), unit_extra=unit_extra,
                       type="notify" if s.notify else "exec", service_extra=service_extra, command=s.command,
                       nofile=s.limit_nofile, sandbox=directives(sandbox))


def supervisor_script(s: Service) -> str:
    """The unit's command in a restart loop; as `s.user` through setpriv when it has one."""
    logdir = s.log.rsplit("/", 1)[0]
    command = s.command
    if s.user:
        command = f"setpriv --reuid={s.user} --regid={s.user} --init-groups -- {command}"
    return SUPERVISOR.format(name=s.name, pidfile=s.pidfile, logdir=logdir, nofile=s.limit_nofile, command=command,
                             log=s.log)
