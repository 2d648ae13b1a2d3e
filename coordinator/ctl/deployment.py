"""`hs-ctl install` and `hs-ctl upgrade` from their command line: the node's options, the connection, the report.

An upgrade is an install of this release that first takes a backup on the node with the node's own
hs-ctl (`pre-upgrade-<time>.db`, kept apart from the scheduled ones), as kubeadm backs up etcd before
it upgrades a control plane. A node without an install is refused: install it instead.
"""

from __future__ import annotations

import argparse
import re
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from agentkit import pki as agentpki
from agentkit import sshkeys
from agentkit.addr import check_host_address, check_source_url
from coordinator.ctl import layout, node, pki
from coordinator.ctl.errors import CtlError
from coordinator.ctl.install import install
from coordinator.ctl.schedule import Job
from coordinator.ctl.settings import CtlSettings
from coordinator.domain.fields import NAME
from deployer import hostkeys
from deployer.deploy import DeploySettings, load_settings
from deployer.engine import Connection

PRE_UPGRADE = "pre-upgrade"
PRE_UPGRADE_KEEP = 5
NAME_MAX = 63 - len("-consoleproxy")  # fields.NAME's length, less the proxy's suffix


def _pki(tls_dir: Path | None) -> tuple[tuple[str, str], ...]:
    """The certificate files an operator gives (`--tls-dir`), by their name in layout.PKI: the CA's certificate
    and every role's pair (the CA's key too, when given: the coordinator then issues hosts theirs)."""
    if tls_dir is None:
        return ()
    if not tls_dir.is_dir():
        raise CtlError(f"--tls-dir {tls_dir}: no such directory")
    wanted = [n for n in pki.names() if n != pki.CA_KEY_NAME]
    missing = [n for n in wanted if not (tls_dir / n).is_file()]
    if missing:
        raise CtlError(f"--tls-dir {tls_dir}: missing {', '.join(missing)}")
    given = [*wanted, *([pki.CA_KEY_NAME] if (tls_dir / pki.CA_KEY_NAME).is_file() else [])]
    _check_pki(tls_dir, given)
    return tuple((n, (tls_dir / n).read_text()) for n in given)


def _check_pki(tls_dir: Path, given: list[str]) -> None:
    """CtlError naming a file of `tls_dir` that is not what its name says (the CA's certificate, its key, a
    role's certificate with its own key): laid out as they were, the node's services failed on them."""
    loaders: dict[str, Callable[[bytes], object]] = {pki.CA_NAME: agentpki.load_certs,
                                                     pki.CA_KEY_NAME: agentpki.load_key}
    for name in (n for n in loaders if n in given):
        try:
            loaders[name]((tls_dir / name).read_bytes())
        except (agentpki.PkiError, OSError) as e:
            raise CtlError(f"--tls-dir {tls_dir}: {name}: {e}") from None
    for cert, key in ((pki.cert_name(role), pki.key_name(role)) for role in pki.ROLES):
        try:
            ssl.create_default_context().load_cert_chain(tls_dir / cert, tls_dir / key)
        except (ssl.SSLError, OSError) as e:
            why = "the key is not the certificate's" if getattr(e, "reason", None) == "KEY_VALUES_MISMATCH" else \
                "not a readable PEM certificate and key"
            raise CtlError(f"--tls-dir {tls_dir}: {cert} with {key}: {why}") from None


def options(a: argparse.Namespace) -> node.NodeOptions:
    for flag, value in (("--host", a.host), ("--address", a.address)):
        if value is not None:  # both reach ssh, URLs and certificates: `-oProxyCommand=…` is no host
            try:
                check_host_address(value)
            except ValueError as e:
                raise CtlError(f"{flag}: {e}") from None
    if a.agent_url is not None:  # written into the configuration of every agent the node deploys
        try:
            check_source_url(a.agent_url, ("https", "http"))
        except ValueError as e:
            raise CtlError(f"--agent-url {a.agent_url!r}: {e}") from None
    if relative := [root for root in a.file_root if not root.startswith("/")]:  # the coordinator would not start
        raise CtlError(f"--file-root {relative[0]!r}: not an absolute directory")
    schedule = None if a.backup_schedule == "none" else a.backup_schedule
    if schedule:
        Job(schedule, a.keep_amount)  # refused now, not once the release is built and the node probed
    address = a.address or a.host or socket.getfqdn()
    o = node.NodeOptions(address=address, name=a.name, api_port=a.api_port, agent_url=a.agent_url,
                         pki=_pki(a.tls_dir), file_roots=tuple(a.file_root), backup_schedule=schedule,
                         backup_keep=a.keep_amount)
    if not re.fullmatch(NAME, node.proxy_host(o)["name"]):  # its coordinator would refuse to register the proxy
        raise CtlError(f"--name {a.name!r}: letters, digits, '.', '_' and '-', at most {NAME_MAX} (the console "
                       "proxy's host is named <name>-consoleproxy)")
    return o


def host_keys(a: argparse.Namespace, settings: DeploySettings) -> tuple[str, ...]:
    """The SSH host keys the node may present: the operator's (`--ssh-host-key`), else the one it presents now
    (its fingerprint is shown for the operator to compare, as `hs host add` does)."""
    if a.host is None:
        return ()
    try:
        if a.ssh_host_key:
            return tuple(sshkeys.parse(k) for k in a.ssh_host_key)
        return tuple(hostkeys.scan(a.host, a.ssh_port, settings.ssh_executable, settings.connect_timeout))
    except ValueError as e:
        raise CtlError(f"--ssh-host-key: {e}") from None
    except hostkeys.KeyScanError as e:
        raise CtlError(f"{e} (give it with --ssh-host-key)") from None


def run(a: argparse.Namespace, password: Callable[[argparse.Namespace], str | None], upgrade: bool,
        ctl: CtlSettings | None = None) -> str:
    """Install (or upgrade), the options checked before the SSH password is asked for. `ctl`: this hs-ctl's
    settings, the node's where it installs on this machine (as `hs-ctl backup-schedule` reads them)."""
    o = options(a)
    connection = Connection(address=a.host or "localhost", port=a.ssh_port, user=a.user, password=password(a),
                            key_file=a.key_file, local=a.host is None)
    backup = {"hs_ctl": str(layout.HS_CTL), "name": PRE_UPGRADE, "keep": PRE_UPGRADE_KEEP} if upgrade else None
    settings = load_settings()
    keys = host_keys(a, settings)
    done = install(o, connection, settings, backup, keys, ctl if connection.local else None)
    what = "unchanged" if not done.changed else f"{'upgraded to' if upgrade else 'installed'} {done.version} " \
        f"({', '.join(done.changed)})"
    lines = [f"control node {o.address}: {what}"]
    lines += [f"SSH host key accepted: {sshkeys.fingerprint(k)}" for k in keys]
    if done.backup:
        lines.append(f"before the upgrade: {done.backup}")
    lines += [f"coordinator API: {done.api_url}", f"admin token: {done.admin_token}",
              f"reader token: {done.reader_token}", f"metrics token: {done.metrics_token}"]
    if done.ca is not None:
        lines.append(f"CA: {layout.PKI_FILES.ca} on the node ({done.ca}): give it to `hs --ca` and agents' deploys")
    return "\n".join(lines)
