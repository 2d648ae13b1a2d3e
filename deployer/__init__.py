"""Agent deployers: install and upgrade HostStack agents on Debian hosts over SSH (ansible-core API).

Entry points: `deploy(agent, targets, coordinator_url, ...)` and `needs_upgrade(reported_version)`;
see docs/deployer.md.
"""

from deployer.deploy import AGENTS, DeploySettings, current_version, deploy, load_settings, needs_upgrade
from deployer.errors import BuildError, InvalidRequest
from deployer.model import ConnectedCheck, Result, Target

__all__ = ["AGENTS", "BuildError", "ConnectedCheck", "DeploySettings", "InvalidRequest", "Result", "Target",
           "current_version", "deploy", "load_settings", "needs_upgrade"]
