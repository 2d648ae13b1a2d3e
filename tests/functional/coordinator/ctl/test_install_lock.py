"""One install, upgrade or restore of a control node at a time (docs/operations.md "One at a time"), on the sshd
target of test_control_node.py: a second install while an upgrade holds the node fails at once naming it and
changes nothing, the first goes on to its end; an expired lease of a controller that is gone is taken over."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import tomllib

from tests.functional.coordinator.ctl import test_control_node
from tests.functional.coordinator.ctl.test_control_node import Node, _state, _token

node = test_control_node.node  # its fixture: a node installed on a fresh target, for this module
LOCK = "/var/lib/hoststack/deploy/controlnode.lock"
HOLD, HELD = "/var/tmp/hs-test-hold", "/var/tmp/hs-test-held"
# etcdctl as the node's hs-ctl finds it first on PATH: once a snapshot is saved, it waits while HOLD is there
ETCDCTL = f"""#!/bin/sh
/usr/bin/etcdctl "$@"
rc=$?
case " $* " in *" snapshot save "*)
  if [ -e {HOLD} ]; then touch {HELD}; while [ -e {HOLD} ]; do sleep 0.1; done; fi;;
esac
exit $rc
"""


def _write(node: Node, path: str, text: str) -> None:
    subprocess.run(node.target.argv(["tee", path]), input=text, text=True, check=True, capture_output=True)


def _until(node: Node, path: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while node.target.read(path) is None:
        assert time.monotonic() < deadline, f"{path} did not appear on the node"
        time.sleep(0.2)


def test_a_second_install_while_an_upgrade_holds_the_node_fails_naming_it_and_the_upgrade_goes_on(node: Node):
    path = node.ctl("backup", "--file-name", "lock").stdout.split()[1]
    _write(node, "/usr/local/sbin/etcdctl", ETCDCTL)
    node.target.sh("chmod", "755", "/usr/local/sbin/etcdctl")
    node.target.sh("touch", HOLD)
    first = subprocess.Popen(node.command("upgrade"), env=node.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        _until(node, HELD)  # the upgrade's backup is done, its install not begun: it holds the node
        held = json.loads(node.target.read(LOCK) or "{}")
        assert (held["what"], held["host"], held["pid"]) == ("hs-ctl upgrade", socket.gethostname(), first.pid)
        before, calls = _state(node), node.lab.ssh_calls(node.target)
        second = node.install(options=("--keep-amount", "13"))
        assert second.returncode == 1 and second.stderr.splitlines()[-1] == (
            f"hs-ctl: {node.target.address}: probe: hs-ctl upgrade from {socket.gethostname()} (pid {first.pid}) "
            f"since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(held['since']))}, expires "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(held['expires']))} holds this node ({LOCK}); nothing "
            "was changed: run this again once it ended"), second.stderr
        assert node.lab.ssh_calls(node.target) - calls == 1 and _state(node) == before
        refused = node.ctl("restore", path, ok=False)  # etcd stopped under the upgrade's restarts: refused too
        assert refused.returncode == 1 and refused.stderr.startswith(
            f"hs-ctl: hs-ctl upgrade from {socket.gethostname()} (pid {first.pid}) since "), refused.stderr
        assert _state(node) == before and json.loads(node.target.read(LOCK) or "{}") == held
    finally:
        node.target.sh("rm", "-f", HOLD, HELD)
        out, err = first.communicate(timeout=600)
        node.target.sh("rm", "-f", "/usr/local/sbin/etcdctl")
    assert first.returncode == 0, out + err
    assert ": unchanged" in out and "before the upgrade: backup /var/backups/hoststack/pre-upgrade-" in out, out
    assert _token(out) == node.token and node.target.read(LOCK) is None
    calls = node.lab.ssh_calls(node.target)
    again = node.install()  # nothing to do: one round trip, no lease taken or left
    assert again.returncode == 0 and ": unchanged" in again.stdout, again.stdout + again.stderr
    assert node.lab.ssh_calls(node.target) - calls == 1 and node.target.read(LOCK) is None


def test_an_expired_lease_of_a_controller_that_is_gone_is_taken_over(node: Node):
    gone = {"id": "f0e1d2c3", "what": "hs-ctl install", "host": "ctl-gone", "pid": 999999, "local": False,
            "start": None, "since": time.time() - 1200, "expires": time.time() - 600}
    _write(node, LOCK, json.dumps(gone))
    changed = node.install(options=("--keep-amount", "13"))
    assert changed.returncode == 0 and ": unchanged" not in changed.stdout, changed.stdout + changed.stderr
    assert "taking over the node's lease of hs-ctl install from ctl-gone (pid 999999)" in changed.stderr
    assert "--keep-amount 13" in (node.target.read("/etc/cron.d/hoststack-backup") or "")
    assert node.target.read(LOCK) is None and _token(changed.stdout) == node.token
    assert node.install().returncode == 0  # the install's own schedule again


def test_two_first_installs_of_a_fresh_node_at_once_leave_it_with_the_tokens_each_printed(node: Node):
    """Both probe a node without secrets and make their own: the one that reaches the node second must not
    write its own over the first's (or print tokens the node does not have)."""
    fresh = node.lab.target("cn2", password=node.target.password)
    command = node.command()
    command[command.index("--host") + 1] = fresh.address
    runs = [subprocess.Popen(command, env=node.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in runs]
    done = [(p.returncode, out, err) for p, (out, err) in zip(runs, outputs, strict=True)]
    token = tomllib.loads(fresh.read("/etc/hoststack/coordinator.toml") or "")["admin_token"]
    assert any(rc == 0 for rc, _, _ in done), done
    for rc, out, err in done:
        if rc == 0:
            assert _token(out) == token
        else:
            refused = r"(hs-ctl install from \S+ \(pid \d+\) since .* holds this node \(\S+\)|another install " \
                r"changed the node since this one probed it); nothing was changed"
            assert re.search(refused, err.splitlines()[-1]), err
    assert fresh.read(LOCK) is None
