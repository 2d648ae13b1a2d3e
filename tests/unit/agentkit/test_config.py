"""agentkit.config: env over file over defaults; a bad value names the parameter, the value and its source."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from agentkit import config, logs


class Inner(BaseModel):
    depth: int = Field(1, ge=1)


class Section(BaseModel):
    port: int = Field(8080, ge=1, le=65535)
    inner: Inner = Inner()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cert: str | None = None


class Settings(BaseModel):
    url: str = "http://default"
    port: int = Field(8080, ge=1, le=65535)
    labels: dict[str, str] = {}
    log_level: str = "INFO"
    section: Section = Section()
    strict: Strict = Strict()


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_defaults_then_file_then_environment(tmp_path):
    path = toml(tmp_path, 'url = "http://file"\nport = 9000\n')
    assert config.load(Settings, "p", tmp_path / "absent.toml", env={}) == Settings()
    assert config.load(Settings, "p", path, env={}).model_dump() == {
        "url": "http://file", "port": 9000, "labels": {}, "log_level": "INFO", "section": Section().model_dump(),
        "strict": {"cert": None}}
    got = config.load(Settings, "p", path, env={"HS_P_PORT": "9100", "HS_P_LABELS": '{"rack": "r1"}'})
    assert (got.url, got.port, got.labels) == ("http://file", 9100, {"rack": "r1"})


def drop_in(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / "p.d").mkdir(exist_ok=True)
    path = tmp_path / "p.d" / name
    path.write_text(text)
    return path


def test_drop_ins_override_the_file_in_name_order_a_section_key_by_key(tmp_path):
    path = toml(tmp_path, 'url = "http://file"\nport = 9000\n[section]\nport = 81\n[section.inner]\ndepth = 2\n')
    drop_in(tmp_path, "20-site.toml", "port = 9001\n[section]\nport = 82\n")
    drop_in(tmp_path, "10-first.toml", 'url = "http://first"\nport = 1\n[section.inner]\ndepth = 3\n')
    drop_in(tmp_path, ".editing.toml", "port = [\n")  # hidden, and not TOML: not read
    drop_in(tmp_path, "README", "port = [\n")
    got = config.load(Settings, "p", path, env={})
    assert (got.url, got.port, got.section.port, got.section.inner.depth) == ("http://first", 9001, 82, 3)
    got = config.load(Settings, "p", path, env={"HS_P_SECTION": '{"port": 83}'})  # a variable: the key whole
    assert (got.port, got.section.port, got.section.inner.depth) == (9001, 83, 1)
    assert config.load(Settings, "p", tmp_path / "absent.toml", env={}) == Settings()  # absent.d: none
    (tmp_path / "p.toml").unlink()
    assert config.load(Settings, "p", path, env={}).port == 9001  # drop-ins without the file


def test_what_a_drop_in_set_is_named_by_the_drop_in(tmp_path, caplog):
    path = toml(tmp_path, "[section]\nport = 81\n")
    site = drop_in(tmp_path, "site.toml", "[section]\nport = 0\nprot = 1\n")
    with caplog.at_level(logging.WARNING, logger="agentkit.config"), \
            pytest.raises(config.ConfigError, match=rf"^config section\.port=0 from {site}: Input should be greater"):
        config.load(Settings, "p", path, env={})
    assert [r.getMessage() for r in caplog.records] == [f"unknown config key 'section.prot' in {site}"]
    with pytest.raises(config.ConfigError, match=r"^config section\.port=0 from \$HS_P_SECTION: "):
        config.load(Settings, "p", path, env={"HS_P_SECTION": '{"port": 0}'})
    for text in ("port = [\n", "port = '\udcff'\n"):  # not TOML, not UTF-8
        site.write_text(text, errors="surrogateescape")
        with pytest.raises(config.ConfigError, match=rf"^{site}: "):
            config.load(Settings, "p", path, env={})


def test_a_drop_in_directory_that_cannot_be_read_is_refused_by_name(tmp_path):
    (tmp_path / "p.d").symlink_to("p.d")  # a loop: listing it fails for root too, as a mode of 0 would not
    with pytest.raises(config.ConfigError, match=rf"^{tmp_path / 'p.d'}: Too many levels of symbolic links$"):
        config.load(Settings, "p", toml(tmp_path, "port = 7000\n"), env={})


def test_the_environment_names_the_file(tmp_path):
    path = toml(tmp_path, "port = 7000\n")
    assert config.load(Settings, "p", env={"HS_P_CONFIG": str(path)}).port == 7000


@pytest.mark.parametrize("text, env, message", [
    ("port = 0\n", {}, r"^config port=0 from .*p\.toml: Input should be greater than or equal to 1$"),
    ("", {"HS_P_PORT": "many"}, r"^config port='many' from \$HS_P_PORT: Input should be a valid integer"),
    ("", {"HS_P_LABELS": "{nope"}, r"^config labels from \$HS_P_LABELS: not a JSON object: "),
    ("port = [\n", {}, r"^.*p\.toml: "),
    ("[section]\nport = 0\n", {}, r"^config section\.port=0 from .*p\.toml: Input should be greater than or equal"),
    ("[section.inner]\ndepth = 'deep'\n", {}, r"^config section\.inner\.depth='deep' from .*p\.toml: Input should be"),
    ("", {"HS_P_SECTION": '{"port": 0}'}, r"^config section\.port=0 from \$HS_P_SECTION: Input should be greater"),
    ("[strict]\ncrt = 'a.pem'\n", {}, r"^config strict\.crt='a\.pem' from .*p\.toml: Extra inputs are not permitted$"),
])
def test_errors_name_parameter_value_and_source(tmp_path, text, env, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(Settings, "p", toml(tmp_path, text), env=env)


def test_unknown_keys_in_the_file_are_warned_about_and_ignored(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="agentkit.config"):
        got = config.load(Settings, "p", toml(tmp_path, 'colour = "blue"\nport = 81\n'), env={})
    assert got.port == 81
    assert [r.getMessage() for r in caplog.records] == [f"unknown config key 'colour' in {tmp_path / 'p.toml'}"]


def test_unknown_keys_in_a_section_are_warned_about_by_their_whole_name_and_ignored(tmp_path, caplog):
    path = toml(tmp_path, "[section]\nprot = 81\nport = 82\n[section.inner]\ndepht = 2\n")
    with caplog.at_level(logging.WARNING, logger="agentkit.config"):
        got = config.load(Settings, "p", path, env={"HS_P_STRICT": '{"cert": "c.pem"}'})
    assert (got.section.port, got.section.inner.depth, got.strict.cert) == (82, 1, "c.pem")
    assert [r.getMessage() for r in caplog.records] == [f"unknown config key 'section.prot' in {path}",
                                                        f"unknown config key 'section.inner.depht' in {path}"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agentkit.config"):
        config.load(Settings, "p", tmp_path / "absent.toml", env={"HS_P_SECTION": '{"prot": 81}'})
    assert [r.getMessage() for r in caplog.records] == ["unknown config key 'section.prot' in $HS_P_SECTION"]


def test_the_command_line_loads_the_file_and_sets_the_log_level(tmp_path, monkeypatch):
    levels = []
    monkeypatch.setattr(logs, "setup", levels.append)
    path = toml(tmp_path, 'log_level = "DEBUG"\n')
    assert config.from_command_line(Settings, "p", "a process", ["--config", str(path)]).log_level == "DEBUG"
    assert levels == ["DEBUG"]


def test_bad_config_on_the_command_line_exits_with_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        config.from_command_line(Settings, "p", "a process", ["--config", str(toml(tmp_path, "port = -1\n"))])
    assert str(e.value).startswith("p: config port=-1 from ") and "\n" not in str(e.value)


def test_a_process_model_without_a_log_level_is_a_bug(tmp_path):
    class Quiet(BaseModel):
        url: str = "x"

    with pytest.raises(TypeError, match="Quiet has no log_level"):
        config.from_command_line(Quiet, "p", "a process", ["--config", str(tmp_path / "absent.toml")])
