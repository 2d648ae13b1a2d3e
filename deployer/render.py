"""The text a deploy writes on a host: the agent's TOML config, its systemd unit, its supervisor script.

Rendered on the controller so their digests can be compared with the host's stamp before anything
is sent. Nothing here does I/O. A unit and the supervisor script run the same command line.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping

from agentkit.pki import Layout
from deployer.agentspec import AgentSpec
from deployer.model import AgentApiTokens
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


Value = str | int | bool | list[str]
RENEW_AT = 1 / 3  # part of an agent certificate's life left when a deploy renews it


def _toml(value: Value | dict[str, Value]) -> str:
    """A JSON string, number or array of strings is a valid TOML one; a dict is an inline table."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def config_toml(values: Mapping[str, Value | dict[str, Value]]) -> str:
    """Flat TOML (sections as inline tables)."""
    lines = ["# Written by the HostStack deployer; a redeploy replaces it."]
    for key, value in values.items():
        lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def tls_settings(spec: AgentSpec, https: bool) -> dict[str, Value]:
    """The agent's `[tls]`: the CA (and its own certificate, when the deploy brings it) over https; else plain."""
    if not https:
        return {"plain_http": True}
    layout = Layout()
    own = {"cert": str(layout.cert(spec.name)), "key": str(layout.key(spec.name))} if spec.own_certificate else {}
    return {"ca": str(layout.ca), **own}


def agent_config(spec: AgentSpec, coordinator_url: str, host_uuid: str, host_token: str,
                 api: AgentApiTokens | None = None) -> str:
    """The agent's settings the deploy owns, under the names its settings model (agentkit.config) loads: over
    TLS when the coordinator is reached over https, else in plain HTTP; the tokens of its own API, if it
    serves one (a metrics token only where scrapers have one)."""
    values = {"coordinator_url": coordinator_url, "host_uuid": host_uuid, "host_token": host_token,
              "api_token": api.api_token if api else None, "metrics_token": api.metrics_token if api else None}
    return config_toml({**{key: v for key, source in spec.config_keys if (v := values[source]) is not None},
                        "tls": tls_settings(spec, coordinator_url.startswith("https:"))})


def certificate_due(stamp: dict[str, str], now: float | None = None) -> bool:
    """The agent's certificate, as the host's stamp records it, is missing or has a third of its life left."""
    try:
        issued, expires = json.loads(stamp["tls"])
    except (KeyError, ValueError, TypeError):
        return True
    now = time.time() if now is None else now
    return expires - now < (expires - issued) * RENEW_AT


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
