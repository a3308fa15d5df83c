"""The one settings table: precedence, validation, and the README kept in step."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import build_parser
from exporter.config import Config, SettingError, resolve, settings, settings_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def parse(argv: list[str], env: dict[str, str]) -> Config:
    """Resolve a Config from serve flags and an environment."""
    return resolve(build_parser().parse_args(["serve", *argv]), env)


def test_readme_settings_table_matches_the_code() -> None:
    assert settings_markdown() in README.read_text(), "regenerate the README table from settings_markdown()"


def test_every_setting_has_flag_env_help() -> None:
    for row in settings():
        assert (
            row.flag.startswith("--")
            and row.env.startswith("FLAKEDROP_TELEMETRY_")
            and row.help.endswith(".")
        )


@pytest.mark.parametrize(
    ("argv", "env", "want"),
    [
        ([], {}, 8080),
        ([], {"FLAKEDROP_TELEMETRY_PORT": "9000"}, 9000),
        (["--port", "9100"], {"FLAKEDROP_TELEMETRY_PORT": "9000"}, 9100),
    ],
    ids=["default", "env over default", "flag over env"],
)
def test_precedence(argv: list[str], env: dict[str, str], want: int) -> None:
    assert parse(argv, env).port == want


def test_required_settings_exist() -> None:
    names = {row.name for row in settings()}
    assert {
        "host",
        "port",
        "data_dir",
        "database_url",
        "threads",
        "max_body_bytes",
        "max_batch",
        "max_versions",
        "latest_version",
        "latest_release_date",
        "update_url",
        "latest_critical",
        "read_token",
    } <= names
    defaults = Config()
    assert (
        defaults.port,
        defaults.data_dir,
        defaults.max_body_bytes,
        defaults.max_batch,
        defaults.max_versions,
    ) == (8080, "./data", 1048576, 100, 100)


def test_booleans_and_default_store_url() -> None:
    config = parse(["--latest-critical", "yes", "--data-dir", "/srv/x"], {})
    assert config.latest_critical is True
    assert config.store_url == "sqlite:////srv/x/telemetry.db"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "abc"], {}, "--port"),
        ([], {"FLAKEDROP_TELEMETRY_MAX_BATCH": "0"}, "--max-batch"),
        ([], {"FLAKEDROP_TELEMETRY_LATEST_CRITICAL": "perhaps"}, "FLAKEDROP_TELEMETRY_LATEST_CRITICAL"),
    ],
)
def test_bad_values_name_the_setting(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingError, match=message):
        parse(argv, env)
