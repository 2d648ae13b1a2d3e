"""Addresses every package spells the same way: the metadata address, host literals, URLs for display."""

from __future__ import annotations

from urllib.parse import urlsplit

METADATA_ADDRESS = "169.254.169.254"  # the link-local address guests ask for metadata (EC2, OpenStack)


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
