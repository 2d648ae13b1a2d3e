"""Where `hs` finds the coordinator: flag, then environment, then cli.toml, then the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.cli.config import DEFAULT_URL, Connection, load, normalize_url
from coordinator.cli.errors import CliError


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "cli.toml"
    path.write_text('url = "http://10.0.0.1:8740"\ntoken = "from-file"\n')
    return path


def test_flags_win_over_the_environment_which_wins_over_the_file(toml: Path):
    env = {"HS_CLI_CONFIG": str(toml)}
    assert load(None, None, env) == Connection("http://10.0.0.1:8740", "from-file")
    env |= {"HS_URL": "http://10.0.0.2:8740/", "HS_TOKEN": "from-env"}
    assert load(None, None, env) == Connection("http://10.0.0.2:8740", "from-env")
    assert load("https://c.example:443", "from-flag", env) == Connection("https://c.example:443", "from-flag")


def test_without_a_file_the_url_defaults_and_a_token_is_required(tmp_path: Path):
    env = {"HS_CLI_CONFIG": str(tmp_path / "none.toml")}
    assert load(None, "t", env) == Connection(DEFAULT_URL, "t")
    with pytest.raises(CliError, match="no admin token: pass --token, set HS_TOKEN or write .*none.toml"):
        load(None, None, env)


def test_a_bare_host_and_port_means_http():
    assert normalize_url("127.0.0.1:8740", "--url") == "http://127.0.0.1:8740"
    assert normalize_url("coord.example", "--url") == "http://coord.example"
    conn = load("a:8740, https://b:8740/", "t" * 20, {"HS_CLI_CONFIG": "/nonexistent"})
    assert conn.url == "http://a:8740,https://b:8740"


@pytest.mark.parametrize("url", ["ftp://10.0.0.1", "http://", "http://h:99999", "http://h:port", "http://[::1", " ",
                                 "http://é:80", "http://-oProxy=x"])
def test_a_bad_url_is_one_error_naming_value_and_source(url: str):
    with pytest.raises(CliError) as e:
        normalize_url(url, "HS_URL")
    assert str(e.value) == f"HS_URL {url!r}: expected a coordinator URL such as http://127.0.0.1:8740"


def test_a_broken_file_is_named(tmp_path: Path):
    path = tmp_path / "cli.toml"
    path.write_text('url = "http://x"\ntoken = \n')
    with pytest.raises(CliError, match=f"^{path}: "):
        load(None, None, {"HS_CLI_CONFIG": str(path)})
    path.write_text("token = 5\n")
    with pytest.raises(CliError, match="token must be a string"):
        load(None, None, {"HS_CLI_CONFIG": str(path)})
