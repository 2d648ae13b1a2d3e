"""SSH host keys as recorded: parsed strictly, fingerprinted as OpenSSH does, pinned in known_hosts lines."""

from __future__ import annotations

import pytest

from agentkit import sshkeys

# ssh-keygen -t ed25519 (a throw-away key) and its `ssh-keygen -lf` fingerprint
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPOS0LRNXfJ8hiMaYQPCc/+hIhD1XvSLgG9KYn7rGONX"
FINGERPRINT = "SHA256:xY5QgljaqRjY6kQTzlWkPHRWbXAQd7tGKmBF4JUdeac"


def test_a_key_line_is_kept_without_its_comment_and_fingerprinted_as_openssh_does():
    key = sshkeys.parse(f"  {ED25519} root@vm\n")
    assert key == ED25519 and sshkeys.fingerprint(key) == FINGERPRINT


@pytest.mark.parametrize("text, problem", [
    ("", "'<type> <base64>'"),
    ("ssh-ed25519", "'<type> <base64>'"),
    ("ssh-dss AAAAB3NzaC1kc3M=", "unknown SSH key type 'ssh-dss'"),
    ("ssh-ed25519 AAAA=B", "'<type> <base64>'"),
    ("ssh-rsa " + ED25519.split()[1], "not of type ssh-rsa"),
    ("-oProxyCommand=x AAAA", "unknown SSH key type"),
])
def test_anything_else_is_refused_naming_the_problem(text, problem):
    with pytest.raises(ValueError, match=problem):
        sshkeys.parse(text)


def test_known_hosts_names_the_port_only_when_it_is_not_22():
    assert sshkeys.known_hosts("198.18.0.2", 22, [ED25519]) == f"198.18.0.2 {ED25519}\n"
    assert sshkeys.known_hosts("fd00::2", 2222, [ED25519]) == f"[fd00::2]:2222 {ED25519}\n"
