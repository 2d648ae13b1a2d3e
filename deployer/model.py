"""The deployer's data: the hosts a deploy goes to, what one step did on one, and how each host's deploy ended.

Plain data shared by every deployer module (the engine reports `Outcome`s, `deploy` returns `Result`s,
the coordinator questions take a `Target`), so none of them imports another for a type. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """A host to deploy to: its name (as logs show it), SSH access and its identity at the coordinator.

    `host_token` None: keep the token in the host's current config if the coordinator still accepts it,
    else get a new one from the coordinator (see `coordinator_api.coordinator_tokens`). `ssh_host_keys` are
    the only host keys ssh accepts from it (recorded at the coordinator); without any it is not deployed.
    """

    name: str
    address: str
    host_uuid: str
    host_token: str | None
    port: int = 22
    user: str = "root"
    password: str | None = None
    key_file: str | None = None
    ssh_host_keys: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What one step did on one host. `error` is the raw cause (ssh, module or remote stderr)."""

    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    unreachable: bool = False


@dataclass
class Result:
    """How a host's deploy ended. `tasks` lists what ran on the host (one SSH round trip each, roughly)."""

    host: str
    ok: bool = True
    changed: bool = False
    task: str | None = None
    message: str = ""
    tasks: list[str] = field(default_factory=list)
    seconds: float = 0.0


# (target, agent version deployed) -> True once the coordinator says the agent is Connected.
ConnectedCheck = Callable[[Target, str], bool]
# (target, agent version deployed, the agent sessions its host showed before the deploy restarted the agent) ->
# True once the coordinator says an agent is Connected with that version in none of those sessions.
SessionCheck = Callable[[Target, str, frozenset[str]], bool]
# target -> the agent session the coordinator shows for its host now (None: none).
SessionRead = Callable[[Target], str | None]
@dataclass(frozen=True)
class AgentApiTokens:
    """What the agent's own API takes (a kvmagent's `api_token` and `metrics_token`, a console proxy's
    `metrics_token` alone), never the host's token: the first reads the agent's state, the second only its
    metrics; neither acts for the host anywhere."""

    api_token: str | None
    metrics_token: str | None


# (target, token found in the host's config or None) -> the token to write into it.
TokenSource = Callable[[Target, str | None], str]
# target -> the tokens its agent's own API takes.
ApiTokenSource = Callable[[Target], AgentApiTokens]
