"""deploy: seconds to deploy kvmagent to 4 fresh hosts with our deployer, against the same steps as a
plain playbook (bench/deploy_peer.yml) run by ansible-playbook with its defaults; then a no-change
redeploy with each.

The hosts are sshd targets in namespaces (testbed.sshd), the agent a stub that dials a stub
coordinator (testbed.deploylab). Both sides install the same wheelhouse (built once, untimed) and end
when every agent reports Connected.
"""

from __future__ import annotations

import json
import secrets
import sys
import tarfile
import time
import uuid
from pathlib import Path

from agentkit.proc import ProcessError, run
from deployer import wheelhouse
from deployer.deploy import AGENTS, DeploySettings, deploy
from deployer.model import Result, Target
from testbed.deploylab import StubCoordinator, agent_source
from testbed.netns import Run
from testbed.sshd import SshLab

HOSTS = 4
PLAYBOOK = Path(__file__).with_name("deploy_peer.yml")
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


def make_targets(lab: SshLab, coordinator: StubCoordinator, prefix: str) -> list[Target]:
    targets = []
    for i in range(HOSTS):
        host = lab.target(f"{prefix}{i}")
        u, token = str(uuid.uuid4()), secrets.token_hex(16)
        coordinator.add_host(u, token)
        targets.append(Target(host.name, host.address, u, token, password=host.password))
    return targets


def ours(targets: list[Target], coordinator: StubCoordinator, admin: str, settings: DeploySettings) -> float:
    t0 = time.monotonic()
    results: dict[str, Result] = deploy("kvmagent", targets, coordinator.agent_url, admin_token=admin,
                                        api_url=coordinator.api_url, settings=settings)
    seconds = time.monotonic() - t0
    failed = [r.message for r in results.values() if not r.ok]
    if failed:
        raise SystemExit(f"ours failed: {failed}")
    return seconds


def inventory(run_: Run, lab: SshLab, targets: list[Target], coordinator: StubCoordinator, admin: str,
              wheelhouse_tar: Path) -> Path:
    """YAML (JSON) inventory: connectivity to the test bed plus the playbook's variables, nothing about speed."""
    wrapper = str(lab.ssh_executable)
    with tarfile.open(wheelhouse_tar) as tar:
        wheel_names = sorted(tar.getnames())
    hosts = {t.name: {"ansible_host": t.address, "ansible_password": t.password, "host_uuid": t.host_uuid,
                      "host_token": t.host_token} for t in targets}
    common = {
        "ansible_user": "root",
        "ansible_python_interpreter": "/usr/bin/python3",  # as in the lab recipe: discovery finds a pyenv shim
        "ansible_ssh_executable": wrapper, "ansible_sftp_extra_args": f"-S {wrapper}",
        "ansible_scp_extra_args": f"-S {wrapper}", "ansible_control_path_dir": str(run_.path("cp-peer")),
        "ansible_ssh_common_args": f"-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={lab.known_hosts}",
        "packages": list(AGENTS["kvmagent"].packages), "wheelhouse": str(wheelhouse_tar),
        "wheel_names": wheel_names,
        "coordinator_url": coordinator.agent_url, "api_url": coordinator.api_url, "admin_token": admin,
    }
    path = run_.path("inventory.yml")
    path.write_text(json.dumps({"targets": {"hosts": hosts, "vars": common}}, indent=1))
    return path


def peer(inv: Path) -> float:
    t0 = time.monotonic()
    try:
        run([str(ANSIBLE_PLAYBOOK), "-i", str(inv), str(PLAYBOOK)], timeout=1200)
    except ProcessError as e:
        raise SystemExit(f"peer failed:\n{e.stdout[-1500:]}") from e
    return time.monotonic() - t0


def main() -> None:
    admin = secrets.token_hex(8)
    with Run() as run_:
        lab = SshLab(run_)
        coordinator = StubCoordinator(admin, lab.listen()).start()
        try:
            src = agent_source(run_.path("src"))
            settings = DeploySettings(source_dir=src, ssh_executable=str(lab.ssh_executable),
                                      known_hosts=lab.known_hosts, control_path_dir=run_.path("cp"))
            bundle = wheelhouse.build(AGENTS["kvmagent"], src, settings.cache_dir)  # untimed, shared by both
            ours_targets = make_targets(lab, coordinator, "o")
            peer_targets = make_targets(lab, coordinator, "p")
            o = ours(ours_targets, coordinator, admin, settings)
            o_again = ours(ours_targets, coordinator, admin, settings)
            print(f"ours: fresh {o:.2f}s, no change {o_again:.2f}s", file=sys.stderr)
            calls = sum(lab.ssh_calls(h) for h in lab.targets[:HOSTS])
            inv = inventory(run_, lab, peer_targets, coordinator, admin, bundle.tar)
            p = peer(inv)
            p_again = peer(inv)
            print(f"peer: fresh {p:.2f}s, no change {p_again:.2f}s", file=sys.stderr)
            peer_calls = sum(lab.ssh_calls(h) for h in lab.targets[HOSTS:])
        finally:
            coordinator.stop()
    print(f"{HOSTS} hosts; ssh invocations for both runs: ours={calls} peer={peer_calls}", file=sys.stderr)
    print(f"redeploy (no change): ours={o_again:.2f} peer={p_again:.2f} ratio={o_again / p_again:.3f}")
    print(f"deploy: ours={o:.2f} peer={p:.2f} ratio={o / p:.3f}")


if __name__ == "__main__":
    main()
