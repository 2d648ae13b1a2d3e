"""Which agent a deploy's wait may take for the one it (re)started.

A stopped agent still shows Connected, with its version, until `heartbeat_timeout` passes without its
heartbeat: a wait that asked only for Connected and the version passed on the last heartbeat of the agent it
had just stopped (a config-only redeploy whose config the new agent cannot work with reported success; a
rollback's wait took the stopped agent of the previous version for the restored one). So just before a step
restarts a host's agent (the service step, a rollback) the deployer reads the agent session the coordinator
shows for the host (`agent_session`: each agent process has its own), and the wait takes only an agent in
another session. A host whose coordinator shows no session (an agent or coordinator older than sessions), or
whose session could not be read then, waits as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from agentkit.errors import HostStackError
from deployer.engine import Listener
from deployer.model import ConnectedCheck, Outcome, SessionCheck, SessionRead, Target

log = logging.getLogger(__name__)


class Stale:
    """The agent sessions each host showed before this deploy restarted its agent: an agent Connected in one of
    them is one that was stopped. `read` None (a check of the caller's own): none are known."""

    def __init__(self, targets: Sequence[Target], read: SessionRead | None):
        self.targets = {t.name: t for t in targets}
        self.read = read
        self.seen: dict[str, set[str]] = {}

    def note(self, host: str) -> None:
        """`host`'s agent is about to be restarted: the session it shows now is stale from here on."""
        if self.read is None:
            return
        try:
            session = self.read(self.targets[host])
        except (HostStackError, OSError) as e:
            log.warning("%s: the agent's session could not be read before its restart (%s): its wait takes any "
                        "agent Connected with the version", host, e)
            return
        if session is not None:
            self.seen.setdefault(host, set()).add(session)

    def bind(self, check: SessionCheck) -> ConnectedCheck:
        """`check` told the sessions seen so far of each host it is asked about (read at each call: a rollback
        adds the one it stops)."""
        return lambda t, version: check(t, version, frozenset(self.seen.get(t.name, ())))

    def noting(self, listener: Listener, step: str) -> Listener:
        """`listener`, with each host's session noted as `step` starts there (before the engine runs it)."""
        return _Noting(listener, self, step)


class _Noting:
    def __init__(self, listener: Listener, stale: Stale, step: str):
        self.listener, self.stale, self.step = listener, stale, step

    def started(self, host: str, step: str) -> None:
        if step == self.step:
            self.stale.note(host)
        self.listener.started(host, step)

    def finished(self, host: str, step: str, outcome: Outcome) -> None:
        self.listener.finished(host, step, outcome)
