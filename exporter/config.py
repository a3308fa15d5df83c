"""The one settings table: every setting's flag, environment variable, default and help."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "FLAKEDROP_TELEMETRY_"


def parse_bool(text: str) -> bool:
    """Parse a boolean setting value such as true/false/1/0/yes/no."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def setting(default: Any, help: str, parse: Callable[[str], Any] | None = None, group: str = "server") -> Any:
    """Declare one setting: a dataclass field carrying its help, parser and group."""
    parser = parse or type(default)
    return field(default=default, metadata={"help": help, "parse": parser, "group": group})


@dataclass(frozen=True)
class Config:
    """All settings of the server; precedence is flag, then environment, then default."""

    host: str = setting("127.0.0.1", "Address to listen on (use 0.0.0.0 in a container).")
    port: int = setting(8080, "TCP port to listen on.")
    data_dir: str = setting("./data", "Directory for the SQLite store and the user-id key file.")
    database_url: str = setting(
        "", "Store URL: sqlite:///path/to.db or postgresql://... (default: SQLite file in the data dir)."
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
        "v1.3.5", "Latest FlakeDrop release, answered by /v1/version/latest.", group="release"
    )
    latest_release_date: str = setting(
        "2026-11-20", "Release date of the latest release (YYYY-MM-DD).", group="release"
    )
    update_url: str = setting(
        "https://github.com/flakedrop/flakedrop/releases/latest",
        "Where clients download the latest release.",
        group="release",
    )
    latest_critical: bool = setting(
        False, "Whether the latest release is a critical update.", parse_bool, "release"
    )
    read_token: str = setting(
        "",
        "When set, /, /stats and /metrics need it (Bearer, or Basic with it as password).",
        group="security",
    )
    user_id_key: str = setting(
        "",
        "Secret for the HMAC that re-hashes user ids (default: generated once into the data dir).",
        group="security",
    )
    rate_limit: float = setting(
        0.0, "Requests per second allowed per client IP on /v1/events (0 disables).", group="security"
    )
    rate_burst: int = setting(60, "Token-bucket burst size for the per-IP rate limit.", group="security")
    trusted_proxies: str = setting(
        "", "Comma-separated proxy IPs/CIDRs whose X-Forwarded-For is believed.", group="security"
    )
    retention_days: int = setting(
        0, "Delete per-user rows of users inactive longer than this (0 keeps them forever).", group="store"
    )
    grafana_url: str = setting(
        "", "Grafana URL linked from the page at / (hidden when empty).", group="server"
    )
    log_level: str = setting("info", "Log level: debug, info, warning or error.")
    backup_dir: str = setting(
        "", "Directory for scheduled snapshots of the store (empty: no snapshots).", group="store"
    )
    backup_interval: int = setting(3600, "Seconds between scheduled snapshots.", group="store")
    backup_keep: int = setting(24, "Scheduled snapshots kept; older ones are deleted.", group="store")

    @property
    def store_url(self) -> str:
        """Return the effective store URL (the SQLite default lives in the data dir)."""
        if self.database_url:
            return self.database_url
        return "sqlite:///" + str(Path(self.data_dir) / "telemetry.db")

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
            )
        )
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting to an argparse parser (defaults resolved later)."""
    for row in settings():
        parser.add_argument(row.flag, dest=row.name, default=None, metavar=row.name.upper(), help=row.help)


def resolve(args: argparse.Namespace | Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Build a Config from parsed flags, then environment, then defaults."""
    env = os.environ if env is None else env
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    chosen: dict[str, Any] = {}
    for row in settings():
        raw = values.get(row.name)
        source = row.flag
        if raw is None and row.env in env:
            raw, source = env[row.env], row.env
        if raw is None:
            continue
        try:
            chosen[row.name] = raw if not isinstance(raw, str) else row.parse(raw)
        except ValueError as exc:
            raise SettingError(f"{source}: {exc}") from None
    config = Config(**chosen)
    validate(config)
    return config


def _networks_ok(text: str) -> bool:
    """Return whether text is a comma-separated list of IP networks."""
    import ipaddress

    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            ipaddress.ip_network(part, strict=False)
    except ValueError:
        return False
    return True


class SettingError(ValueError):
    """A setting has a value the server cannot use."""


def validate(config: Config) -> None:
    """Reject setting combinations that cannot work, with a message naming the setting."""
    checks: Sequence[tuple[bool, str]] = (
        (0 < config.port < 65536, "--port must be between 1 and 65535"),
        (config.threads >= 1, "--threads must be at least 1"),
        (config.workers >= 1, "--workers must be at least 1"),
        (config.max_body_bytes >= 1024, "--max-body-bytes must be at least 1024"),
        (config.max_batch >= 1, "--max-batch must be at least 1"),
        (config.max_versions >= 1, "--max-versions must be at least 1"),
        (config.dedup_window >= 0, "--dedup-window must be 0 or more"),
        (config.retention_days >= 0, "--retention-days must be 0 or more"),
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
        lines.append(
            f"| `{row.flag}` | `{row.env}` | `{default}` | {row.help} |"
            if default
            else f"| `{row.flag}` | `{row.env}` | (empty) | {row.help} |"
        )
    return "\n".join(lines)
