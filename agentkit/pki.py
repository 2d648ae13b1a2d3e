"""HostStack's small certificate authority.

`hs pki init` makes a CA (an EC P-256 key and a self-signed certificate); the coordinator holds the CA
key and issues every host its certificate (common name the host's uuid, the host's registered address as
the only subject name, valid for servers and clients). Processes find their files by the `Layout`
(`pkifiles.py`, re-exported here) unless their `[tls]` settings name others, so an operator's own
certificates work as well.

Keys are written with mode 0600 by a rename of a complete file, never in place.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agentkit.durable import write_atomic
from agentkit.pkifiles import DEFAULT_DIR as DEFAULT_DIR  # re-exported: callers name them as pki's
from agentkit.pkifiles import Layout as Layout

CA_DAYS = 3650
SKEW = datetime.timedelta(minutes=5)  # certificates start this long before now: clocks differ a little
Key = ec.EllipticCurvePrivateKey


class PkiError(Exception):
    """A certificate or key that cannot be read or used, or a CA that should not be overwritten."""


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def subject_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """IP addresses as IP names, anything else as a DNS name."""
    out: list[x509.GeneralName] = []
    for h in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def make_ca(common_name: str = "HostStack CA", days: int = CA_DAYS) -> tuple[x509.Certificate, Key]:
    key = new_key()
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def init_ca(layout: Layout, common_name: str = "HostStack CA", days: int = CA_DAYS) -> x509.Certificate:
    """Write a new CA into `layout`; PkiError when one is there already (its certificates would all break)."""
    if layout.ca.exists() or layout.ca_key.exists():
        raise PkiError(f"{layout.ca} or {layout.ca_key} exists already: a new CA would invalidate every "
                       "certificate it issued (remove both to start over)")
    cert, key = make_ca(common_name, days)
    write_key(layout.ca_key, key)
    write_certs(layout.ca, [cert])
    return cert


@dataclass(frozen=True)
class Issuer:
    """A CA that signs: its certificate and key."""

    cert: x509.Certificate
    key: Key

    @classmethod
    def load(cls, cert: Path, key: Path) -> Issuer:
        return cls(read_certs(cert)[0], read_key(key))

    def issue(self, public_key: ec.EllipticCurvePublicKey, common_name: str, hosts: Sequence[str], days: float,
              client: bool = True, server: bool = True) -> x509.Certificate:
        """A certificate for `common_name`, valid for `hosts` (IP addresses or DNS names) for `days` days."""
        now = _now()
        usages = [u for u, want in ((ExtendedKeyUsageOID.SERVER_AUTH, server),
                                    (ExtendedKeyUsageOID.CLIENT_AUTH, client)) if want]
        builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(self.cert.subject)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - SKEW).not_valid_after(now + datetime.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(subject_names(hosts)), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_pair(self, common_name: str, hosts: Sequence[str], days: float) -> tuple[list[x509.Certificate], Key]:
        """A new key and its certificate chain (leaf, then this CA)."""
        key = new_key()
        return [self.issue(key.public_key(), common_name, hosts, days), self.cert], key

    def sign_request(self, csr_pem: bytes, common_name: str, hosts: Sequence[str], days: float) -> x509.Certificate:
        """Sign a request's key only: the names are ours to give (`common_name`, `hosts`), never the request's."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as e:
            raise PkiError(f"not a PEM certificate signing request: {e}") from None
        if not csr.is_signature_valid:
            raise PkiError("the certificate signing request's signature does not verify")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise PkiError("the certificate signing request must carry an EC key")
        return self.issue(public, common_name, hosts, days)


def request(key: Key, common_name: str) -> bytes:
    """A PEM certificate signing request for `key`."""
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name)).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def load_certs(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise PkiError(f"not a readable PEM certificate: {e}") from None


def load_key(data: bytes) -> Key:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise PkiError(f"not a readable unencrypted PEM key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("not an EC key")
    return key


def read_certs(path: Path) -> list[x509.Certificate]:
    try:
        return load_certs(path.read_bytes())
    except (OSError, PkiError) as e:
        raise PkiError(f"{path}: {e}") from None


def read_key(path: Path) -> Key:
    try:
        return load_key(path.read_bytes())
    except (OSError, PkiError) as e:
        raise PkiError(f"{path}: {e}") from None


def names_of(cert: x509.Certificate) -> set[str]:
    """The IP addresses and DNS names a certificate is valid for."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n) for n in (*san.get_values_for_type(x509.IPAddress), *san.get_values_for_type(x509.DNSName))}


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode)


def write_key(path: Path, key: Key) -> None:
    _write(path, key_pem(key), 0o600)


def key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_certs(path: Path, certs: Sequence[x509.Certificate]) -> None:
    _write(path, pem(certs), 0o644)


def not_after(cert: x509.Certificate) -> float:
    return cert.not_valid_after_utc.timestamp()


def life_left(cert: x509.Certificate, now: float) -> float:
    """The part of the certificate's lifetime still ahead at `now` (1.0 new, 0.0 or below expired)."""
    start, end = cert.not_valid_before_utc.timestamp(), not_after(cert)
    return (end - now) / (end - start)


def fingerprint(cert: x509.Certificate) -> str:
    return "SHA256:" + cert.fingerprint(hashes.SHA256()).hex()
