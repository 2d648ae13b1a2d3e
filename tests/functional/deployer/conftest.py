"""Fixtures of the deployer tests: sshd targets in namespaces, a stub coordinator, a frozen agent source."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field

import pytest

from deployer.deploy import DeploySettings
from deployer.model import Target
from testbed.deploylab import StubCoordinator, agent_source
from testbed.sshd import SshLab, SshTarget

ADMIN = "admin-" + secrets.token_hex(8)


@dataclass
class Fleet:
    """One lab for the module: the controller side, the coordinator and every target made so far."""

    lab: SshLab
    coordinator: StubCoordinator
    settings: DeploySettings
    fake_package: str
    admin_token: str = ADMIN
    targets: dict[str, Target] = field(default_factory=dict)
    hosts: dict[str, SshTarget] = field(default_factory=dict)

    def add(self, name: str, *, sshd: bool = True, password: str | None = None,
            has_fake_package: bool = True) -> Target:
        """A target; `password` overrides what the deployer is told (the host keeps its own)."""
        host = self.lab.target(name, sshd=sshd)
        if sshd and has_fake_package:
            host.mark_installed(self.fake_package)
        u, token = str(uuid.uuid4()), secrets.token_hex(16)
        self.coordinator.add_host(u, token)
        t = Target(name=name, address=host.address, host_uuid=u, host_token=token,
                   password=password or host.password)
        self.targets[name], self.hosts[name] = t, host
        return t


@pytest.fixture(scope="module")
def fleet(run) -> Fleet:
    lab = SshLab(run)
    coordinator = StubCoordinator(ADMIN, lab.listen()).start()
    fake = f"hs-fake-{run.tag}"
    settings = DeploySettings(
        source_dir=agent_source(run.path("src")), ssh_executable=str(lab.ssh_executable),
        known_hosts=lab.known_hosts, control_path_dir=run.path("cp"), connected_timeout=60,
        # every host also "needs" a made-up package; hosts that lack it show the missing-package case.
        # No index refresh: it would rewrite this machine's apt lists to learn nothing.
        extra_packages=[fake], refresh_index=False)
    yield Fleet(lab, coordinator, settings, fake)
    coordinator.stop()
