"""Agent deployers: install and upgrade HostStack agents on Debian hosts over SSH (ansible-core API).

Entry points: `deploy(agent, targets, coordinator_url, ...)` and `needs_upgrade(reported_version)`;
see docs/deployer.md.
"""

from deployer.coordinator_api import ConnectedCheck
from deployer.deploy import (
    AGENTS,
    DeploySettings,
    Result,
    Target,
    current_version,
    deploy,
    load_settings,
    needs_upgrade,
)
from deployer.wheelhouse import BuildError

__all__ = ["AGENTS", "BuildError", "ConnectedCheck", "DeploySettings", "Result", "Target", "current_version", "deploy",
           "load_settings", "needs_upgrade"]
