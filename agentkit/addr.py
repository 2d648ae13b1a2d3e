"""Addresses every package spells the same way: the metadata address, host literals, URLs for display, the
URLs images may be fetched from."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from urllib.parse import urlsplit

METADATA_ADDRESS = "169.254.169.254"  # the link-local address guests ask for metadata (EC2, OpenStack)
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")  # RFC 1123


def check_host_address(text: str) -> str:
    """`text` if it is an IP address (no IPv6 scope) or a DNS name, else ValueError.

    Host addresses reach ssh, URLs and command lines: nothing that could read as an option (`-o...`),
    a path or shell syntax passes. A name whose last label is all digits is a mistyped IPv4 address
    (`127.0.0.256`), not a name (RFC 3696 section 2)."""
    try:
        if "%" not in text:
            ipaddress.ip_address(text)
            return text
    except ValueError:
        pass
    labels = text.split(".")
    if len(text) > 253 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"{text[:60]!r} is neither an IP address nor a DNS name")
    return text


def same_host_key(address: str) -> str:
    """The spelling that every spelling of one host address (`check_host_address`'s) shares, to compare two: an IP
    address compressed (an IPv4-mapped IPv6 address as its IPv4 address), a DNS name in lower case (RFC 4343)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address.lower()
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


def host_literal(host: str) -> str:
    """`host` as it appears in a URL or `host:port`: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def host_port(host: str, port: int) -> str:
    return f"{host_literal(host)}:{port}"


def http_url(scheme: str, host: str, port: int, path: str = "") -> str:
    return f"{scheme}://{host_port(host, port)}{path}"


def display_url(url: str) -> str:
    """A URL safe to show or log: scheme, host, port and path; no user, password, query or fragment."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host_literal(parts.hostname or '')}{port}{parts.path}"


def check_source_url(url: str, schemes: Collection[str] = ("http", "https", "file")) -> str:
    """`url` if an image may be fetched from it, else ValueError saying why: one of `schemes`, no whitespace
    or control character (urlsplit would drop some, http.client refuses them), a valid port, and a host the
    resolver takes (no empty label, none over 63 characters) unless it is a file:// URL. The coordinator and
    the cephagent check what they are given, the image store every redirect."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("a URL has no whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise ValueError(f"not a URL: {e}") from None
    if parts.scheme not in schemes:
        raise ValueError(f"scheme {parts.scheme!r} is not {' or '.join(schemes)}")
    if parts.scheme != "file" and not parts.hostname:
        raise ValueError("an http(s) URL needs a host")
    try:
        (parts.hostname or "").encode("idna")  # as getaddrinfo encodes it
    except UnicodeError:
        raise ValueError(f"not a URL: host {parts.hostname!r} has an empty label or one over 63 characters") \
            from None
    return url
