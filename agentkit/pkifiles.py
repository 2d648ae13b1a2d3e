"""Where the PKI files live (the one place that says so), apart from `pki.py`'s certificate authority:
a short command that only needs the paths (hs-ctl backup, through the control node's layout) does not
import `cryptography`.

    /etc/hoststack/pki/ca.pem            the CA certificate: every process trusts it (all hosts)
    /etc/hoststack/pki/ca-key.pem        the CA key (control nodes only: the coordinator issues with it)
    /etc/hoststack/pki/<name>.pem        a process's certificate chain (leaf first), e.g. coordinator.pem
    /etc/hoststack/pki/<name>-key.pem    its key (mode 0600)
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

DEFAULT_DIR = Path("/etc/hoststack/pki")


class Layout(NamedTuple):  # not a dataclass: hs-ctl backup does not import dataclasses
    """The PKI files of one directory (default /etc/hoststack/pki)."""

    dir: Path = DEFAULT_DIR

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca-key.pem"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}-key.pem"
