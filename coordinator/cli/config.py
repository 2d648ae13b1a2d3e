"""Where `hs` finds the coordinator: each setting from its flag, else its environment variable, else
the file `/etc/hoststack/cli.toml` (`HS_CLI_CONFIG` names another), else its default.

A URL without a scheme (`127.0.0.1:8740`) means http. Errors name the value and where it came from.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agentkit.addr import check_host_address
from coordinator.cli.errors import CliError

CONFIG_FILE = "/etc/hoststack/cli.toml"
DEFAULT_URL = "http://127.0.0.1:8740"


@dataclass(frozen=True)
class Connection:
    url: str
    token: str


def load(url: str | None, token: str | None, env: Mapping[str, str]) -> Connection:
    """The coordinator's URL and admin token from the flags (None when not given), `env` and the file."""
    path = Path(env.get("HS_CLI_CONFIG", CONFIG_FILE))
    file = _read(path)
    url_value, url_source = _first((url, "--url"), (env.get("HS_URL"), "HS_URL"), (file.get("url"), f"{path} url"),
                                   (DEFAULT_URL, "default"))
    token_value, _ = _first((token, "--token"), (env.get("HS_TOKEN"), "HS_TOKEN"), (file.get("token"), str(path)))
    if not token_value:
        raise CliError(f"no admin token: pass --token, set HS_TOKEN or write {path}")
    urls = [normalize_url(u.strip(), url_source) for u in url_value.split(",") if u.strip()] or [url_value]
    return Connection(",".join(urls), token_value)  # several: replicas the client moves between


def normalize_url(text: str, source: str) -> str:
    """`text` as an http(s) URL without a trailing slash; a bare HOST:PORT is taken as http."""
    url = text if "://" in text else f"http://{text}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:  # also an unclosed IPv6 bracket
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not _is_host(parts.hostname):
        raise CliError(f"{source} {text!r}: expected a coordinator URL such as http://127.0.0.1:8740")
    return url.rstrip("/")


def _is_host(hostname: str | None) -> bool:
    try:
        return hostname is not None and check_host_address(hostname) == hostname
    except ValueError:
        return False


def _read(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise CliError(f"{path}: {e}") from None
    for key in ("url", "token"):
        if not isinstance(data.get(key, ""), str):
            raise CliError(f"{path}: {key} must be a string")
    return data


def _first(*candidates: tuple[str | None, str]) -> tuple[str, str]:
    """The first value given, with where it came from."""
    return next(((v, src) for v, src in candidates if v), ("", ""))
