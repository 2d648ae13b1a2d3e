"""Agent deployers: install and upgrade HostStack agents on Debian hosts over SSH (ansible-core API).

Entry points: `deployer.deploy.deploy(agent, targets, coordinator_url, ...)` and `needs_upgrade(reported_version)`;
see docs/deployer.md. Nothing is imported here up front: ansible is slow to import, and what needs only a
light module of this package (`deployer.remote`, `deployer.service`, `deployer.render`) should not pay for
it. The names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deployer.deploy import AGENTS, DeploySettings, current_version, load_settings, needs_upgrade
    from deployer.errors import BuildError, InvalidRequest
    from deployer.model import ConnectedCheck, Result, Target

_WHERE = {"AGENTS": "deploy", "DeploySettings": "deploy", "current_version": "deploy", "load_settings": "deploy",
          "needs_upgrade": "deploy", "BuildError": "errors", "InvalidRequest": "errors", "ConnectedCheck": "model",
          "Result": "model", "Target": "model"}
__all__ = ["AGENTS", "BuildError", "ConnectedCheck", "DeploySettings", "InvalidRequest", "Result", "Target",
           "current_version", "load_settings", "needs_upgrade"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'deployer' has no attribute {name!r}")
    return getattr(importlib.import_module(f"deployer.{_WHERE[name]}"), name)
