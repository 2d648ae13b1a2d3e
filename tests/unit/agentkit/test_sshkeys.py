"""SSH host keys as recorded: parsed strictly, fingerprinted as OpenSSH does, pinned in known_hosts lines; a
guest's authorized keys: one line holding a key of a type cloud-init takes."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agentkit import sshkeys

# ssh-keygen -t ed25519 (a throw-away key) and its `ssh-keygen -lf` fingerprint
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPOS0LRNXfJ8hiMaYQPCc/+hIhD1XvSLgG9KYn7rGONX"
FINGERPRINT = "SHA256:xY5QgljaqRjY6kQTzlWkPHRWbXAQd7tGKmBF4JUdeac"
# FIDO keys (`ssh-keygen -t ed25519-sk`, `ecdsa-sk`): a public key and the application `ssh:`
SK_ED25519 = ("sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIOMBTYvaMvx8eBwJimx0L9RZZS/"
              "ejKhG7HqDzxsV+hGjAAAABHNzaDo=")
SK_ECDSA = ("sk-ecdsa-sha2-nistp256@openssh.com AAAAInNrLWVjZHNhLXNoYTItbmlzdHAyNTZAb3BlbnNzaC5jb20AAAAIbmlzdHAyNTYAAAB"
            "BBLJOBF9wlHjXG/GMsn1bgA+vfRlg+cq13JoofPFxsaVlxrLmwAauicqe4byuv2srcuFTrkGYK+RKaUwwkm6wln0AAAAEc3NoOg==")


CURVES = {"ecdsa-sha2-nistp256": ec.SECP256R1, "ecdsa-sha2-nistp384": ec.SECP384R1, "ecdsa-sha2-nistp521": ec.SECP521R1}


def generated(kind: str) -> str:
    """A fresh key of `kind` as ssh-keygen writes it (made by the test, so that every worker collects it alike)."""
    key = rsa.generate_private_key(65537, 2048) if kind == "ssh-rsa" else ec.generate_private_key(CURVES[kind]())
    return key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


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


@pytest.mark.parametrize("key", [ED25519, SK_ED25519, SK_ECDSA, "ssh-rsa", *CURVES])
def test_a_guests_key_of_each_type_cloud_init_takes_is_kept_with_its_comment(key):
    key = key if " " in key else generated(key)
    assert sshkeys.authorized_key(f" {key} alice@lab\n") == f"{key} alice@lab"
    assert sshkeys.authorized_key(key) == key


@pytest.mark.parametrize("text, problem", [
    ("", "one line of printable text"),
    (f"{ED25519} a\n{SK_ED25519} b", "one line"),  # served as two keys
    (f"{ED25519} a\rb", "one line"),
    (f"{ED25519} a\x00b", "one line"),
    (f"{ED25519} {'c' * 8192}", "at most 8192 characters"),
    ("ssh-dss AAAAB3NzaC1kc3M=", "unknown SSH key type 'ssh-dss'"),
    ("k", "unknown SSH key type 'k'"),
    ("ssh-ed25519 AAAA", "not an SSH public key of type ssh-ed25519"),
    ("ssh-ed25519 not*base64", "not an SSH public key of type ssh-ed25519"),
    ("ssh-rsa " + ED25519.split()[1], "not an SSH public key of type ssh-rsa"),
    (ED25519[:-4], "not an SSH public key of type ssh-ed25519"),
])
def test_anything_else_given_a_guest_is_refused_naming_the_problem(text, problem):
    with pytest.raises(ValueError, match=problem):
        sshkeys.authorized_key(text)
