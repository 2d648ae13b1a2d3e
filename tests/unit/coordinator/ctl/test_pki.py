"""The control node's certificates: made once, kept while they serve, renewed when due, always of one CA."""

from __future__ import annotations

import time
import tomllib

from agentkit import pki as agentpki
from coordinator.ctl import layout, node, pki

SECRETS = {"admin_token": "a" * 43, "reader_token": "g" * 43, "metrics_token": "m" * 43, "secret_key": "k" * 44,
           "etcd_password": "e" * 43, "etcd_root_password": "r" * 43}


def leaf(files: dict[str, str], role: str):
    return agentpki.load_certs(files[pki.cert_name(role)].encode())[0]


def test_a_fresh_node_gets_a_ca_and_a_certificate_per_role_naming_where_it_is_reached():
    files = dict(pki.node_pki("198.18.0.2", {}))
    assert set(files) == set(pki.names())
    ca = agentpki.load_certs(files["ca.pem"].encode())[0]
    for role in pki.ROLES:
        assert leaf(files, role).issuer == ca.subject
    assert agentpki.names_of(leaf(files, "coordinator")) == {"198.18.0.2", "127.0.0.1", "localhost"}
    assert agentpki.names_of(leaf(files, "etcd-server")) == {"127.0.0.1", "localhost"}


def test_what_serves_is_kept_and_only_what_is_due_or_wrong_is_issued_again():
    first = dict(pki.node_pki("198.18.0.2", {}))
    assert dict(pki.node_pki("198.18.0.2", first)) == first  # an unchanged node: nothing to write
    late = dict(pki.node_pki("198.18.0.2", first, now=time.time() + 300 * 86400))  # under a third left
    assert late["ca.pem"] == first["ca.pem"] and late["ca-key.pem"] == first["ca-key.pem"]
    assert all(late[pki.cert_name(r)] != first[pki.cert_name(r)] for r in pki.ROLES)
    moved = dict(pki.node_pki("198.18.0.3", first))  # reached elsewhere: the API's certificate follows
    assert moved[pki.cert_name("coordinator")] != first[pki.cert_name("coordinator")]
    assert moved[pki.cert_name("etcd-server")] == first[pki.cert_name("etcd-server")]
    other = dict(pki.node_pki("198.18.0.2", {}))  # another CA's certificates are not this node's
    mixed = dict(pki.node_pki("198.18.0.2", {**first, "etcd-peer.pem": other["etcd-peer.pem"]}))
    ca = agentpki.load_certs(first["ca.pem"].encode())[0]
    assert mixed["etcd-peer.pem"] != other["etcd-peer.pem"]
    leaf(mixed, "etcd-peer").verify_directly_issued_by(ca)  # raises when it is not


def test_with_its_certificates_the_coordinator_serves_tls_issues_host_certificates_and_tells_agents_https():
    o = node.NodeOptions(address="198.18.0.2", pki=pki.node_pki("198.18.0.2", {}))
    r = node.render_node(o, SECRETS, systemd=True)
    cfg = tomllib.loads(r.file(layout.COORDINATOR_CONFIG).content)
    assert cfg["tls"] == {"cert": f"{layout.PKI}/coordinator.pem", "key": f"{layout.PKI}/coordinator-key.pem",
                          "ca": f"{layout.PKI}/ca.pem"}
    assert (cfg["ca_key"], cfg["coordinator_url_for_agents"]) == (f"{layout.PKI}/ca-key.pem", "https://198.18.0.2:8740")
    modes = {f.path.rsplit("/", 1)[1]: (f.mode, f.group) for f in r.files if f.path.startswith(str(layout.PKI))}
    assert modes["ca-key.pem"] == (0o600, None) and modes["coordinator-key.pem"] == (0o600, None)
    assert modes["etcd-peer-key.pem"] == (0o640, "etcd") and modes["ca.pem"] == (0o644, None)
    assert node.ready_urls(o)["coordinator"] == "https://127.0.0.1:8740/health"
    assert tomllib.loads(r.file(layout.DEPLOYER_CONFIG).content)["ca"] == f"{layout.PKI}/ca.pem"
    proxy = node.render_node(o, {**SECRETS, "proxy_uuid": "p" * 32, "proxy_token": "t" * 43}, systemd=True)
    cfg = tomllib.loads(proxy.file(layout.CONSOLEPROXY_CONFIG).content)  # it asks the coordinator for its own
    assert (cfg["coordinator_url"], cfg["tls"]) == ("https://127.0.0.1:8740", {"ca": f"{layout.PKI}/ca.pem"})
    assert node.ready_urls(o)["consoleproxy"] == "https://198.18.0.2:8743/health"  # the address its certificate names
