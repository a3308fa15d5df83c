"""Turn one decoded JSON event, in any accepted shape, into a validated Event (pure: no I/O, no Falcon)."""

from __future__ import annotations

import calendar
import functools
import re
from typing import Any, NamedTuple

from exporter.errors import InvalidEvent

SHIPPED_TYPES = frozenset({"heartbeat", "config_created", "deployment"})
# The buffered collector's richer types: accepted and counted by type only, so they never
# double count deployments reported by the shipped `deployment` event.
COLLECTOR_TYPES = frozenset(
    {
        "command_executed",
        "deployment_started",
        "deployment_success",
        "deployment_failed",
        "rollback_executed",
        "feature_used",
        "error_occurred",
        "session_started",
        "session_ended",
    }
)
EVENT_TYPES = SHIPPED_TYPES | COLLECTOR_TYPES

# Go's `go tool dist list` values of GOOS and GOARCH.
GOOS = frozenset(
    [
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "hurd",
        "illumos",
        "ios",
        "js",
        "linux",
        "nacl",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "wasip1",
        "windows",
        "zos",
    ]
)
GOARCH = frozenset(
    [
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "ppc64",
        "ppc64le",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    ]
)
UNKNOWN = "unknown"
OTHER = "other"

_SEMVER = re.compile(
    r"^[vV]?(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})"
    r"(-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$",
    re.ASCII,  # \d is ASCII digits only, as in the OpenAPI (ECMA-262) patterns
)
_USER_ID = re.compile(r"^[0-9a-fA-F]{16,64}$")
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$", re.ASCII
)
_DATE_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})$", re.ASCII)
_EVENT_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
MAX_VERSION_LENGTH = 64


class Event(NamedTuple):
    """One validated, normalized event; free text and unknown fields are already gone."""

    type: str
    user_id: str
    version: str
    os: str | None
    arch: str | None
    success: bool | None
    client_time_ns: int | None
    event_id: str | None


@functools.lru_cache(maxsize=1024)  # pure; a memo, not state
def canonical_version(value: str) -> str:
    """Return semver without the leading v and build metadata, or 'unknown'."""
    if len(value) > MAX_VERSION_LENGTH:
        return UNKNOWN
    match = _SEMVER.match(value.strip())
    if match is None:
        return UNKNOWN
    major, minor, patch, pre = match.groups()
    return f"{major}.{minor}.{patch}{pre or ''}"


@functools.lru_cache(maxsize=1024)  # pure; a memo, not state
def canonical_os(value: str) -> str:
    """Return the GOOS value, or 'other' when it is not one."""
    lowered = value.strip().lower()
    return lowered if lowered in GOOS else OTHER


@functools.lru_cache(maxsize=1024)  # pure; a memo, not state
def canonical_arch(value: str) -> str:
    """Return the GOARCH value, or 'other' when it is not one."""
    lowered = value.strip().lower()
    return lowered if lowered in GOARCH else OTHER


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Return days since 1970-01-01 of a proleptic Gregorian date (integer arithmetic, no tables)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146097 + year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year - 719468


@functools.lru_cache(maxsize=1024)  # pure; a memo, not state (a batch's events share their second)
def _utc_seconds(value: str) -> int:
    """Return the Unix seconds of YYYY-MM-DDTHH:MM:SS (UTC), or raise ValueError."""
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        raise ValueError("not RFC 3339 (expected e.g. 2026-11-27T09:15:02.123456789Z)")
    y, mo, d, h, mi, sec = (int(part) for part in match.groups())
    if not (y >= 1 and 1 <= mo <= 12 and d >= 1 and (d <= 28 or d <= calendar.monthrange(y, mo)[1])):
        raise ValueError("date out of range")
    if h > 23 or mi > 59 or sec > 60:
        raise ValueError("time out of range")
    return _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec


def parse_timestamp_ns(value: str) -> int:
    """Parse RFC 3339 with up to nine fractional digits into Unix nanoseconds."""
    if len(value) == 30 and value[19] == "." and value[29] in "Zz":  # the Go client's own layout
        frac = value[20:29]
        if frac.isascii() and frac.isdigit():
            return _utc_seconds(value[:19]) * 1_000_000_000 + int(frac)
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError("not RFC 3339 (expected e.g. 2026-11-27T09:15:02.123456789Z)")
    date_time, frac, _z, sign, off_h, off_m = match.groups()
    seconds = _utc_seconds(date_time)
    if sign:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError("offset out of range")
        offset = int(off_h) * 3600 + int(off_m) * 60
        seconds -= offset if sign == "+" else -offset
    nanos = int(frac.ljust(9, "0")) if frac else 0
    return seconds * 1_000_000_000 + nanos


def _payload(obj: dict[str, Any]) -> dict[str, Any]:
    """Find the payload: the client's double envelope, a single envelope, or the flat form."""
    data = obj.get("data")
    if isinstance(data, dict):
        inner = data.get("data")
        if isinstance(inner, dict):
            return inner
        return data
    if data is not None and "user_id" not in obj:
        raise InvalidEvent("invalid_field", "data", "must be an object holding the event payload")
    return obj


def _text(payload: dict[str, Any], name: str, required: bool) -> str | None:
    """Return a string field, raising a named error when it is missing or not a string."""
    value = payload.get(name)
    if value is None:
        if required:
            raise InvalidEvent("missing_field", name, "is required")
        return None
    if not isinstance(value, str):
        raise InvalidEvent("invalid_field", name, f"must be a string, got {type(value).__name__}")
    return value


def normalize(obj: Any) -> Event:
    """Validate and normalize one event object, or raise InvalidEvent naming the field."""
    if not isinstance(obj, dict):
        raise InvalidEvent("invalid_field", "event", f"must be a JSON object, got {_json_type(obj)}")
    kind = obj.get("type")
    if kind is None:
        raise InvalidEvent("missing_field", "type", f"is required; one of {sorted(SHIPPED_TYPES)}")
    if not isinstance(kind, str):
        raise InvalidEvent("invalid_field", "type", f"must be a string, got {_json_type(kind)}")
    if kind not in EVENT_TYPES:
        raise InvalidEvent(
            "unknown_type", "type", f"unknown event type; expected one of {sorted(EVENT_TYPES)}"
        )
    payload = _payload(obj)

    user_id = _text(payload, "user_id", required=True)
    assert user_id is not None
    if not _USER_ID.fullmatch(user_id):
        raise InvalidEvent("invalid_field", "user_id", "must be 16 to 64 hexadecimal characters")

    version_text = _text(payload, "version", required=True)
    assert version_text is not None
    os_text = _text(payload, "os", required=False)
    arch_text = _text(payload, "arch", required=False)
    timestamp = _text(payload, "timestamp", required=False)
    client_time_ns = None
    if timestamp is not None:
        try:
            client_time_ns = parse_timestamp_ns(timestamp)
        except ValueError as exc:
            raise InvalidEvent("invalid_field", "timestamp", str(exc)) from None

    success = None
    if kind == "deployment":
        success = payload.get("success")
        if success is None:
            raise InvalidEvent(
                "missing_field", "success", "is required for deployment events (true or false)"
            )
        if not isinstance(success, bool):
            raise InvalidEvent(
                "invalid_field", "success", f"must be true or false, got {_json_type(success)}"
            )

    event_id = _text(obj, "id", required=False) if "id" in obj else _text(payload, "id", required=False)
    if event_id is not None and not _EVENT_ID.fullmatch(event_id):
        raise InvalidEvent("invalid_field", "id", "must be 1 to 128 printable ASCII characters")

    return Event(  # positional: a NamedTuple built from keywords costs twice as much
        kind,
        user_id.lower(),
        canonical_version(version_text),
        canonical_os(os_text) if os_text is not None else None,
        canonical_arch(arch_text) if arch_text is not None else None,
        success,
        client_time_ns,
        event_id,
    )


def _json_type(value: Any) -> str:
    """Name a Python value by its JSON type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
