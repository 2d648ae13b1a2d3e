"""What every HostStack process shares: wire models, the coordinator link, config, logging, subprocesses."""

import uuid

__version__ = "0.1.0"
# This process's own, made as it starts: agents report it (their connect's facts, their /health) so that a deploy
# tells the agent it restarted from the one before, whose last heartbeat still counts until it times out. The same
# process reconnecting (a coordinator restarted) keeps it.
SESSION = uuid.uuid4().hex
SESSION_PATTERN = r"^[0-9A-Za-z_-]{8,64}$"
