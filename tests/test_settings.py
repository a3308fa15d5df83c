"""The one settings table: precedence, validation, and the README kept in step."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.cli import build_parser
from exporter.config import Config, SettingError, resolve, settings, settings_markdown

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FLY = ROOT / "fly.toml"


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
        ([], {"PORT": "5000"}, 5000),
        ([], {"PORT": "5000", "FLAKEDROP_TELEMETRY_PORT": "9000"}, 9000),
        (["--port", "9100"], {"PORT": "5000"}, 9100),
        ([], {"PORT": ""}, 8080),
    ],
    ids=[
        "default",
        "env over default",
        "flag over env",
        "PORT over default",
        "env over PORT",
        "flag over PORT",
        "empty PORT is unset",
    ],
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


# Each layer of the precedence chain, present or absent: flag > FLAKEDROP_TELEMETRY_* > platform > default.
LAYER = st.one_of(
    st.none(), st.sampled_from(["sqlite:///a.db", "postgresql://h/one", "postgres://u:p@h:5432/two"])
)


@given(flag=LAYER, ours=LAYER, platform=LAYER)
def test_database_url_precedence(flag: str | None, ours: str | None, platform: str | None) -> None:
    """The store URL comes from the highest layer that is set, as the one-line model says."""
    argv = ["--database-url", flag] if flag else []
    env = {"FLAKEDROP_TELEMETRY_DATABASE_URL": ours} if ours else {}
    env.update({"DATABASE_URL": platform} if platform else {})
    want = flag or ours or platform
    config = parse(argv, env)
    assert config.database_url == (want or "")
    assert config.store_url == (want or "sqlite:///data/telemetry.db")


@pytest.mark.parametrize(
    "url",
    ["postgres://user:pw@db.example:5432/app", "postgresql:///flakedrop", "sqlite:////var/lib/t.db"],
)
def test_platform_database_urls_are_accepted(url: str) -> None:
    """Heroku's postgres:// form, a socket URL and an absolute SQLite path pass unchanged."""
    assert parse([], {"DATABASE_URL": url}).store_url == url


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "http"}, "^PORT: "),
        ({"PORT": "70000"}, "--port must be between"),
        ({"DATABASE_URL": "mysql://root:hunter2@db/app"}, "^DATABASE_URL: .*got 'mysql'$"),
        ({"DATABASE_URL": "db.example:5432"}, "^DATABASE_URL: .*got no scheme$"),
        ({"DATABASE_URL": "postgres://u:p@db:port/app"}, "^DATABASE_URL: .*port that is not a number"),
        ({"DATABASE_URL": "sqlite://relative.db"}, "^DATABASE_URL: a sqlite URL needs a path"),
        ({"FLAKEDROP_TELEMETRY_DATABASE_URL": "postgresql://"}, "^FLAKEDROP_TELEMETRY_DATABASE_URL: "),
    ],
    ids=[
        "PORT not a number",
        "PORT out of range",
        "mysql",
        "no scheme",
        "bad port",
        "relative sqlite",
        "empty",
    ],
)
def test_bad_platform_values_name_the_variable(env: dict[str, str], message: str) -> None:
    """A malformed platform variable is a SettingError naming it, and never echoes a password."""
    with pytest.raises(SettingError, match=message) as caught:
        parse([], env)
    assert "hunter2" not in str(caught.value)


def test_validate_rejects_a_malformed_store_url_built_in_code() -> None:
    """A Config built without resolve() still gets the store URL checked."""
    from exporter.config import validate

    with pytest.raises(SettingError, match="--database-url"):
        validate(Config(database_url="mysql://db/app"))


def test_read_token_file(tmp_path: Path) -> None:
    """The token file fills --read-token (trimmed); --read-token itself wins; a missing file names the flag."""
    token = tmp_path / "read_token"
    token.write_text("s3cret-token\n", encoding="utf-8")
    assert parse(["--read-token-file", str(token)], {}).read_token == "s3cret-token"
    assert parse(["--read-token", "flag", "--read-token-file", str(token)], {}).read_token == "flag"
    with pytest.raises(SettingError, match=r"^--read-token-file: cannot read .*missing"):
        parse(["--read-token-file", str(tmp_path / "missing")], {})
    token.write_text("  \n", encoding="utf-8")
    with pytest.raises(SettingError, match="is empty"):
        parse(["--read-token-file", str(token)], {})


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"DATABASE_URL": "mysql://root:hunter2@db/app"}, "flakedrop-telemetry: DATABASE_URL: expected"),
        ({"PORT": "eighty"}, "flakedrop-telemetry: PORT: invalid literal"),
    ],
    ids=["DATABASE_URL", "PORT"],
)
def test_the_real_cli_refuses_a_malformed_platform_variable(
    tmp_path: Path, env: dict[str, str], line: str
) -> None:
    """`serve` exits 2 with one line naming the variable, before it opens any store or port."""
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--data-dir", str(tmp_path / "data")],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), result.stderr
    assert "hunter2" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_fly_toml_matches_the_image() -> None:
    """fly.toml routes to the port the image listens on, mounts the data dir and health-checks /readyz."""
    fly = tomllib.loads(FLY.read_text(encoding="utf-8"))
    service = fly["http_service"]
    assert service["internal_port"] == Config().port == int(fly["env"]["PORT"])
    assert service["force_https"] is True
    (check,) = service["checks"]
    assert check["path"] == "/readyz" and check["method"].upper() == "GET"
    (mount,) = fly["mounts"] if isinstance(fly["mounts"], list) else [fly["mounts"]]
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert mount["destination"] == "/data" and "--data-dir" in dockerfile and '"/data"]' in dockerfile
    assert fly["build"]["dockerfile"] == "Dockerfile"
    openapi = (ROOT / "exporter" / "openapi.json").read_text(encoding="utf-8")
    assert '"/readyz"' in openapi
