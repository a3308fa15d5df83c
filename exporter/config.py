"""The one settings table: every setting's flag, environment variable, default and help."""

from __future__ import annotations

import argparse
import dataclasses
import os
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.weeks import MAX_WEEKS

ENV_PREFIX = "FLAKEDROP_TELEMETRY_"


def parse_bool(text: str) -> bool:
    """Parse a boolean setting value such as true/false/1/0/yes/no."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


STORE_SCHEMES = ("sqlite", "postgresql", "postgres")
DB_FILE = "telemetry.db"  # the SQLite store in the data dir (next to userkey.KEY_FILE)


def parse_store_url(text: str) -> str:
    """Check a store URL's shape (sqlite:///path or postgresql://...), never echoing its password."""
    url = text.strip()
    if not url:
        return ""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in STORE_SCHEMES:
        shown = repr(scheme) if sep else "no scheme"
        raise ValueError(f"expected sqlite:///path/to.db or postgresql://user:password@host/db, got {shown}")
    if scheme == "sqlite" and (not rest.startswith("/") or rest == "/"):
        raise ValueError("a sqlite URL needs a path after three slashes: sqlite:///path/to.db")
    if not rest:
        raise ValueError(f"a {scheme} URL needs a host or a database: {scheme}://user:password@host/db")
    try:
        _ = urllib.parse.urlsplit(url).port
    except ValueError:
        raise ValueError(f"the {scheme} URL has a port that is not a number") from None
    return url


def setting(
    default: Any, help: str, parse: Callable[[str], Any] | None = None, platform_env: str = ""
) -> Any:
    """Declare one setting: a dataclass field carrying its help, parser and PaaS fallback variable."""
    parser = parse or type(default)
    return field(default=default, metadata={"help": help, "parse": parser, "platform_env": platform_env})


@dataclass(frozen=True)
class Config:
    """All settings of the server; precedence is flag, then environment, then platform variable, then default."""

    host: str = setting("127.0.0.1", "Address to listen on (use 0.0.0.0 in a container).")
    port: int = setting(8080, "TCP port to listen on.", platform_env="PORT")
    data_dir: str = setting("./data", "Directory for the SQLite store and the user-id key file.")
    database_url: str = setting(
        "",
        "Store URL: sqlite:///path/to.db or postgresql://... (default: SQLite file in the data dir).",
        parse_store_url,
        platform_env="DATABASE_URL",
    )
    threads: int = setting(
        32, "Waitress worker threads per process (requests waiting on a group commit each hold one)."
    )
    workers: int = setting(
        1,
        "Server processes sharing the port (SO_REUSEPORT); more than 1 needs PostgreSQL or uses SQLite's lock.",
    )
    writer_process: bool = setting(
        True,
        "Commit in a separate writer process, so request threads never convoy with it on the GIL.",
        parse_bool,
    )
    pin_cpus: bool = setting(
        True,
        "Pin each server process to one CPU and its writer process to another, from the CPUs it may use "
        "(with only one CPU, commit in a thread instead): GIL handoffs between cores collapse throughput.",
        parse_bool,
    )
    connection_limit: int = setting(
        256, "Most simultaneous client connections per process; more wait in the backlog."
    )
    channel_timeout: int = setting(10, "Seconds an idle or slow connection is kept before it is cut off.")
    max_body_bytes: int = setting(1048576, "Largest request body accepted, after gzip decoding (bytes).")
    max_batch: int = setting(100, "Most events in one batch request.")
    max_versions: int = setting(100, "Cap on distinct version label values; later ones become 'other'.")
    dedup_window: int = setting(
        172800, "Seconds during which an identical event (same id, or user+type+timestamp) is counted once."
    )
    latest_version: str = setting(
        "v1.3.5",
        "Latest FlakeDrop release, answered by /v1/version/latest.",
    )
    latest_release_date: str = setting(
        "2026-11-20",
        "Release date of the latest release (YYYY-MM-DD).",
    )
    update_url: str = setting(
        "https://github.com/flakedrop/flakedrop/releases/latest",
        "Where clients download the latest release.",
    )
    latest_critical: bool = setting(False, "Whether the latest release is a critical update.", parse_bool)
    read_token: str = setting(
        "",
        "When set, /, /stats and /metrics need it (Bearer, or Basic with it as password).",
    )
    read_token_file: str = setting(
        "", "File holding the read token (a Docker or compose secret); read when --read-token is empty."
    )
    user_id_key: str = setting(
        "",
        "Secret for the HMAC that re-hashes user ids (default: generated once into the data dir).",
    )
    rate_limit: float = setting(
        0.0,
        "Requests per second allowed per client IP on /v1/events (0 disables).",
    )
    rate_burst: int = setting(60, "Token-bucket burst size for the per-IP rate limit.")
    trusted_proxies: str = setting(
        "",
        "Comma-separated proxy IPs/CIDRs whose X-Forwarded-For is believed.",
    )
    retention_days: int = setting(
        0,
        "Delete per-user rows of users inactive longer than this (0 keeps them forever).",
    )
    retention_cohorts: int = setting(
        12, "Weekly cohorts shown in the retention table, /stats and /metrics (the latest weeks, 1-62)."
    )
    retention_weeks: int = setting(12, "Weeks since the cohort shown for each cohort (columns, 1-62).")
    grafana_url: str = setting(
        "",
        "Grafana URL linked from the page at / (hidden when empty).",
    )
    log_level: str = setting("info", "Log level: debug, info, warning or error.")
    backup_dir: str = setting("", "Directory for scheduled snapshots of the store (empty: no snapshots).")
    backup_interval: int = setting(3600, "Seconds between scheduled snapshots.")
    backup_keep: int = setting(24, "Scheduled snapshots kept; older ones are deleted.")

    @property
    def store_url(self) -> str:
        """Return the effective store URL (the SQLite default lives in the data dir)."""
        if self.database_url:
            return self.database_url
        return "sqlite:///" + str(Path(self.data_dir) / DB_FILE)

    def replace(self, **changes: Any) -> Config:
        """Return a copy with some settings changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SettingInfo:
    """One row of the settings table as documented."""

    name: str
    flag: str
    env: str
    default: Any
    help: str
    parse: Callable[[str], Any]
    platform_env: str


def settings() -> list[SettingInfo]:
    """Return the settings table, in declaration order."""
    rows = []
    for f in dataclasses.fields(Config):
        rows.append(
            SettingInfo(
                name=f.name,
                flag="--" + f.name.replace("_", "-"),
                env=ENV_PREFIX + f.name.upper(),
                default=f.default,
                help=f.metadata["help"],
                parse=f.metadata["parse"],
                platform_env=f.metadata["platform_env"],
            )
        )
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting to an argparse parser (defaults resolved later)."""
    for row in settings():
        parser.add_argument(row.flag, dest=row.name, default=None, metavar=row.name.upper(), help=row.help)


def resolve(args: argparse.Namespace | Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Build a Config from parsed flags, then FLAKEDROP_TELEMETRY_*, then the platform's variable, then defaults."""
    env = os.environ if env is None else env
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    chosen: dict[str, Any] = {}
    for row in settings():
        raw = values.get(row.name)
        source = row.flag
        if raw is None and row.env in env:
            raw, source = env[row.env], row.env
        if raw is None and row.platform_env and env.get(row.platform_env):
            raw, source = env[row.platform_env], row.platform_env
        if raw is None:
            continue
        try:
            chosen[row.name] = raw if not isinstance(raw, str) else row.parse(raw)
        except ValueError as exc:
            raise SettingError(f"{source}: {exc}") from None
    config = _with_token_file(Config(**chosen))
    validate(config)
    return config


def _with_token_file(config: Config) -> Config:
    """Return the config with --read-token taken from --read-token-file when only the file is given."""
    if config.read_token or not config.read_token_file:
        return config
    try:
        token = Path(config.read_token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingError(f"--read-token-file: cannot read {config.read_token_file}: {reason}") from None
    if not token:
        raise SettingError(f"--read-token-file: {config.read_token_file} is empty")
    return config.replace(read_token=token)


def _networks_ok(text: str) -> bool:
    """Return whether text is a comma-separated list of IP networks."""
    import ipaddress

    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            ipaddress.ip_network(part, strict=False)
    except ValueError:
        return False
    return True


def _store_url_ok(text: str) -> bool:
    """Return whether text is empty or a store URL parse_store_url accepts."""
    try:
        parse_store_url(text)
    except ValueError:
        return False
    return True


class SettingError(ValueError):
    """A setting has a value the server cannot use."""


def validate(config: Config) -> None:
    """Reject setting combinations that cannot work, with a message naming the setting."""
    checks: Sequence[tuple[bool, str]] = (
        (0 < config.port < 65536, "--port must be between 1 and 65535"),
        (_store_url_ok(config.database_url), "--database-url must be sqlite:///path or postgresql://..."),
        (config.threads >= 1, "--threads must be at least 1"),
        (config.workers >= 1, "--workers must be at least 1"),
        (config.max_body_bytes >= 1024, "--max-body-bytes must be at least 1024"),
        (config.max_batch >= 1, "--max-batch must be at least 1"),
        (config.max_versions >= 1, "--max-versions must be at least 1"),
        (config.dedup_window >= 0, "--dedup-window must be 0 or more"),
        (config.retention_days >= 0, "--retention-days must be 0 or more"),
        (
            1 <= config.retention_cohorts <= MAX_WEEKS,
            f"--retention-cohorts must be between 1 and {MAX_WEEKS}",
        ),
        (1 <= config.retention_weeks <= MAX_WEEKS, f"--retention-weeks must be between 1 and {MAX_WEEKS}"),
        (config.rate_limit >= 0, "--rate-limit must be 0 or more"),
        (config.rate_burst >= 1, "--rate-burst must be at least 1"),
        (config.backup_interval >= 1, "--backup-interval must be at least 1"),
        (config.backup_keep >= 1, "--backup-keep must be at least 1"),
        (_networks_ok(config.trusted_proxies), "--trusted-proxies must be comma-separated IPs or CIDRs"),
        (
            config.log_level in ("debug", "info", "warning", "error"),
            "--log-level must be debug/info/warning/error",
        ),
    )
    for ok, message in checks:
        if not ok:
            raise SettingError(message)


def settings_markdown() -> str:
    """Render the settings table as the README shows it."""
    lines = ["| Flag | Environment variable | Default | Meaning |", "|---|---|---|---|"]
    for row in settings():
        default = str(row.default).lower() if isinstance(row.default, bool) else str(row.default)
        env = f"`{row.env}`, then `{row.platform_env}`" if row.platform_env else f"`{row.env}`"
        shown = f"`{default}`" if default else "(empty)"
        lines.append(f"| `{row.flag}` | {env} | {shown} | {row.help} |")
    return "\n".join(lines)
