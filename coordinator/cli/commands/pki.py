"""`hs pki …`: the installation's CA and certificates, made on this machine (no coordinator needed).

`init` makes the CA once (see agentkit.pki for where its files go); `issue` makes a certificate and key
for a process that cannot ask the coordinator for one, first of all the coordinator itself. Hosts get
theirs from the coordinator (their agents ask with their token; deploys ask for agents that never dial in).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from agentkit import pki
from agentkit.addr import check_host_address
from coordinator.cli.command import Group, LocalCommand
from coordinator.cli.declare import arg
from coordinator.cli.errors import CliError

DIR_ARG = arg("--dir", default=str(pki.DEFAULT_DIR), help=f"PKI directory (default {pki.DEFAULT_DIR})")
PROCESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _days(text: str) -> float:
    """A lifetime: a positive number of days (a certificate that ends before it starts cannot be made)."""
    try:
        days = float(text)
    except ValueError:
        days = 0.0
    if not 0 < days <= 36500:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of days above 0 (at most 36500)")
    return days


def _process(text: str) -> str:
    """A process name, which names its files in the PKI directory: no path of its own."""
    if not PROCESS.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a process name (letters, digits, . _ -), e.g. "
                                         "coordinator: its files go into --dir")
    return text


def _host(text: str) -> str:
    """A name the certificate is for: an IP address or a DNS name."""
    try:
        return check_host_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def init(a: argparse.Namespace) -> object:
    layout = pki.Layout(Path(a.dir))
    try:
        cert = pki.init_ca(layout, a.name, a.days)
    except (pki.PkiError, OSError) as e:
        raise CliError(str(e)) from None
    return {"ca": str(layout.ca), "ca_key": str(layout.ca_key), "fingerprint": pki.fingerprint(cert),
            "expires_at": pki.not_after(cert)}


def issue(a: argparse.Namespace) -> object:
    layout = pki.Layout(Path(a.dir))
    try:
        ca = pki.Issuer.load(layout.ca, layout.ca_key)
        chain, key = ca.issue_pair(a.name, a.host, a.days)
        pki.write_key(layout.key(a.name), key)
        pki.write_certs(layout.cert(a.name), chain)
    except (pki.PkiError, OSError) as e:
        raise CliError(str(e)) from None
    return {"certificate": str(layout.cert(a.name)), "key": str(layout.key(a.name)), "hosts": a.host,
            "fingerprint": pki.fingerprint(chain[0]), "expires_at": pki.not_after(chain[0])}


GROUP = Group("pki", "the installation's CA and certificates, made on this machine", (
    LocalCommand("init", "make the CA (once: a new CA invalidates every certificate of the old one)", init,
                 DIR_ARG, arg("--name", default="HostStack CA", help="the CA's common name"),
                 arg("--days", type=_days, default=pki.CA_DAYS, help="the CA's lifetime in days")),
    LocalCommand("issue", "a certificate and key for a process, e.g. `hs pki issue coordinator --host 10.0.0.1`",
                 issue, arg("name", type=_process, help="process name: the files are <dir>/<name>.pem and "
                            "<name>-key.pem"),
                 arg("--host", action="append", required=True, type=_host, help="IP address or DNS name clients "
                     "use (repeat for several)"),
                 DIR_ARG, arg("--days", type=_days, default=365, help="lifetime in days")),
))
