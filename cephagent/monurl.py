"""The seeds' monUrl: `ssh_username:ssh_password@mon_server_ip:[ssh_port][/?monPort=ceph_mon_port]`.

Username, password and host are mandatory; ssh_port defaults to 22 and monPort to 6789 (Ceph's legacy
v1 port). The password may contain ':' and '@' (the last '@' ends it); an IPv6 host is written in
brackets. Errors name the bad part and the list position but never echo the password, and neither
`repr()` nor `redacted` shows it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from agentkit.addr import check_host_address, host_literal
from cephagent.errors import InvalidMonUrl

SSH_PORT = 22
MON_PORT = 6789
MSGR2_PORT = 3300
FIELD = "mon_urls"  # the request field of the coordinator that carries monUrls, named by errors
Bad = Callable[[str], InvalidMonUrl]


@dataclass(frozen=True)
class MonUrl:
    ssh_username: str
    ssh_password: str = field(repr=False)
    host: str
    ssh_port: int = SSH_PORT
    mon_port: int = MON_PORT

    @property
    def host_literal(self) -> str:
        """The host as it appears before `:port` (IPv6 in brackets)."""
        return host_literal(self.host)

    @property
    def mon_addr(self) -> str:
        """`host:monPort`, the form libvirt's `<host>` and RbdDisk.monitors use."""
        return f"{self.host_literal}:{self.mon_port}"

    @property
    def redacted(self) -> str:
        """For display and logs: the full monUrl with the password replaced by `***`."""
        return f"{self.ssh_username}:***@{self.host_literal}:{self.ssh_port}/?monPort={self.mon_port}"


def parse(text: str, where: str = "monUrl") -> MonUrl:
    """Parse one monUrl; `where` (e.g. `mon_urls[2]`) prefixes error messages."""
    def bad(problem: str) -> InvalidMonUrl:
        return InvalidMonUrl(field=FIELD, where=where, problem=problem)

    text = text.strip()
    creds, at, location = text.rpartition("@")
    if not at:
        raise bad("missing 'ssh_username:ssh_password@' before mon_server_ip")
    username, colon, password = creds.partition(":")
    if not username:
        raise bad("ssh_username is empty")
    if not colon or not password:
        raise bad(f"ssh_password of user {username!r} is missing (expected {username}:<password>@...)")
    location, query = _split_query(location, bad)
    host, port_text = _split_host(location, bad)
    ssh_port = _port(port_text, "ssh_port", SSH_PORT, bad)
    mon_port = MON_PORT
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "monPort":
            raise bad(f"unknown parameter {key!r} (only monPort is allowed)")
        mon_port = _port(value, "monPort", MON_PORT, bad)
    return MonUrl(username, password, host, ssh_port, mon_port)


def parse_list(texts: Iterable[str] | str) -> list[MonUrl]:
    """Parse monUrls (a list, or one comma-separated string as the CLI takes it); hosts must be distinct."""
    items = texts.split(",") if isinstance(texts, str) else list(texts)
    if not items:
        raise InvalidMonUrl(field=FIELD, where=FIELD, problem="at least one monUrl is required")
    urls = [parse(t, f"{FIELD}[{i}]") for i, t in enumerate(items)]
    seen: dict[tuple[str, int], int] = {}
    for i, u in enumerate(urls):
        key = (u.host, u.mon_port)
        if key in seen:
            raise InvalidMonUrl(field=FIELD, where=f"{FIELD}[{i}]",
                                problem=f"mon {u.mon_addr} is already given as {FIELD}[{seen[key]}]")
        seen[key] = i
    return urls


def ceph_mon_host(addrs: Sequence[tuple[str, int]]) -> str:
    """A `mon_host` value for librados: port 3300 speaks msgr2, any other port the legacy v1 protocol."""
    def one(host: str, port: int) -> str:
        return f"[{'v2' if port == MSGR2_PORT else 'v1'}:{host_literal(host)}:{port}]"
    return ",".join(one(h, p) for h, p in addrs)


def _split_query(location: str, bad: Bad) -> tuple[str, str]:
    head, _, query = location.partition("?")
    head = head[:-1] if head.endswith("/") else head
    if "/" in head:
        raise bad("unexpected '/' after mon_server_ip (expected '/?monPort=<port>')")
    return head, query


def _split_host(location: str, bad: Bad) -> tuple[str, str]:
    if location.startswith("["):
        host, close, rest = location[1:].partition("]")
        if not close:
            raise bad("IPv6 mon_server_ip lacks its closing ']'")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"mon_server_ip [{host}] is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise bad(f"unexpected {rest!r} after mon_server_ip")
        return host, rest[1:]
    host, _, port_text = location.partition(":")
    if not host:
        raise bad("mon_server_ip is missing")
    try:
        check_host_address(host)
    except ValueError:
        raise bad(f"mon_server_ip {host!r} is neither an IP address nor a host name") from None
    return host, port_text


def _port(text: str, what: str, default: int, bad: Bad) -> int:
    if text == "":
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise bad(f"{what} {text!r} is not a port number (1-65535)")
    return int(text)
