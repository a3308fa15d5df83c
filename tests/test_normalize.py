"""Normalization as tables of named cases."""

from __future__ import annotations

import json

import pytest
from wire_samples import CONFIG_CREATED, DEPLOYMENT, HEARTBEAT, USER

from exporter.errors import InvalidEvent
from exporter.normalize import canonical_arch, canonical_os, canonical_version, normalize, parse_timestamp_ns

VERSIONS = {
    "client v prefix": ("v1.3.0", "1.3.0"),
    "already canonical": ("1.3.0", "1.3.0"),
    "capital V": ("V2.0.1", "2.0.1"),
    "prerelease kept": ("v1.4.0-rc.1", "1.4.0-rc.1"),
    "build metadata dropped": ("v1.4.0+sha.abc", "1.4.0"),
    "surrounding spaces": (" v1.2.3 ", "1.2.3"),
    "two parts": ("1.3", "unknown"),
    "leading zero": ("01.2.3", "unknown"),
    "words": ("latest", "unknown"),
    "empty": ("", "unknown"),
    "dev build": ("(devel)", "unknown"),
    "html": ("<script>alert(1)</script>", "unknown"),
    "too long": ("1.2.3-" + "a" * 100, "unknown"),
}


@pytest.mark.parametrize(("raw", "want"), VERSIONS.values(), ids=VERSIONS.keys())
def test_canonical_version(raw: str, want: str) -> None:
    assert canonical_version(raw) == want
    assert canonical_version(canonical_version(raw)) == want, "normalization must be idempotent"


OSES = {
    "darwin": ("darwin", "darwin"),
    "linux": ("linux", "linux"),
    "windows": ("windows", "windows"),
    "freebsd": ("freebsd", "freebsd"),
    "upper case folded": ("Linux", "linux"),
    "marketing name": ("macOS", "other"),
    "empty": ("", "other"),
    "hostile": ('"><img src=x>', "other"),
}


@pytest.mark.parametrize(("raw", "want"), OSES.values(), ids=OSES.keys())
def test_canonical_os(raw: str, want: str) -> None:
    assert canonical_os(raw) == want
    assert canonical_os(canonical_os(raw)) == want


ARCHES = {
    "amd64": ("amd64", "amd64"),
    "arm64": ("arm64", "arm64"),
    "386": ("386", "386"),
    "x86_64 is not GOARCH": ("x86_64", "other"),
    "riscv64": ("riscv64", "riscv64"),
}


@pytest.mark.parametrize(("raw", "want"), ARCHES.values(), ids=ARCHES.keys())
def test_canonical_arch(raw: str, want: str) -> None:
    assert canonical_arch(raw) == want


TIMESTAMPS = {
    "nine digits": ("2026-11-27T09:15:02.123456789Z", 1795770902123456789),
    "one digit": ("2026-11-27T09:14:40.5Z", 1795770880500000000),
    "nanosecond": ("2026-11-27T10:01:13.000000001Z", 1795773673000000001),
    "no fraction": ("2026-11-27T10:01:13Z", 1795773673000000000),
    "offset": ("2026-11-27T11:01:13+01:00", 1795773673000000000),
    "negative offset": ("2026-11-27T05:01:13-05:00", 1795773673000000000),
}


@pytest.mark.parametrize(("raw", "want"), TIMESTAMPS.values(), ids=TIMESTAMPS.keys())
def test_parse_timestamp(raw: str, want: int) -> None:
    assert parse_timestamp_ns(raw) == want


BAD_TIMESTAMPS = {
    "ten digits": "2026-11-27T09:15:02.1234567891Z",
    "no zone": "2026-11-27T09:15:02",
    "month 13": "2026-13-27T09:15:02Z",
    "feb 30": "2026-02-30T09:15:02Z",
    "hour 24": "2026-11-27T24:00:00Z",
    "unix seconds": "1795770902",
}


@pytest.mark.parametrize("raw", BAD_TIMESTAMPS.values(), ids=BAD_TIMESTAMPS.keys())
def test_parse_timestamp_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp_ns(raw)


def test_shipped_heartbeat() -> None:
    event = normalize(json.loads(HEARTBEAT))
    assert (event.type, event.user_id, event.version, event.os, event.arch) == (
        "heartbeat",
        USER,
        "1.3.0",
        "darwin",
        "arm64",
    )
    assert event.client_time_ns == 1795770902123456789


def test_shipped_config_created_has_no_os() -> None:
    event = normalize(json.loads(CONFIG_CREATED))
    assert (event.type, event.os, event.arch, event.version) == ("config_created", None, None, "1.3.0")


def test_shipped_deployment() -> None:
    event = normalize(json.loads(DEPLOYMENT))
    assert (event.type, event.os, event.success, event.version) == ("deployment", "linux", False, "1.3.0")


SHAPES = {
    "flat form": {"type": "deployment", "user_id": USER, "version": "1.0.0", "os": "linux", "success": True},
    "single envelope": {"type": "deployment", "data": {"user_id": USER, "version": "1.0.0", "success": True}},
    "collector event": {
        "id": "5d3c0e7e-1",
        "type": "deployment_failed",
        "timestamp": "2026-11-27T10:01:13Z",
        "session_id": "s1",
        "user_id": USER,
        "version": "v1.3.0",
        "properties": {"sql": "DROP TABLE x"},
        "error": {"message": "boom", "stack": "/home/x"},
    },
    "unknown fields dropped": {"type": "heartbeat", "user_id": USER, "version": "1.0.0", "future": {"x": 1}},
}


@pytest.mark.parametrize("obj", SHAPES.values(), ids=SHAPES.keys())
def test_accepted_shapes(obj: dict) -> None:
    event = normalize(obj)
    assert event.user_id == USER
    assert "boom" not in repr(event) and "DROP" not in repr(event), (
        "free text must never survive normalization"
    )


REJECTS = {
    "not an object": ([1, 2], "invalid_field", "event"),
    "no type": ({"user_id": USER, "version": "1.0.0"}, "missing_field", "type"),
    "type not a string": ({"type": 5, "user_id": USER}, "invalid_field", "type"),
    "unknown type": ({"type": "launch_missiles", "user_id": USER, "version": "1"}, "unknown_type", "type"),
    "no user_id": ({"type": "heartbeat", "version": "1.0.0"}, "missing_field", "user_id"),
    "user_id too short": (
        {"type": "heartbeat", "user_id": "abc123", "version": "1.0.0"},
        "invalid_field",
        "user_id",
    ),
    "user_id not hex": (
        {"type": "heartbeat", "user_id": "z" * 32, "version": "1.0.0"},
        "invalid_field",
        "user_id",
    ),
    "user_id too long": (
        {"type": "heartbeat", "user_id": "a" * 65, "version": "1.0.0"},
        "invalid_field",
        "user_id",
    ),
    "user_id number": (
        {"type": "heartbeat", "user_id": 12345678901234567, "version": "1"},
        "invalid_field",
        "user_id",
    ),
    "no version": ({"type": "heartbeat", "user_id": USER}, "missing_field", "version"),
    "version number": ({"type": "heartbeat", "user_id": USER, "version": 1.3}, "invalid_field", "version"),
    "os array": (
        {"type": "heartbeat", "user_id": USER, "version": "1.0.0", "os": ["linux"]},
        "invalid_field",
        "os",
    ),
    "deployment without success": (
        {"type": "deployment", "user_id": USER, "version": "1.0.0"},
        "missing_field",
        "success",
    ),
    "success as string": (
        {"type": "deployment", "user_id": USER, "version": "1.0.0", "success": "true"},
        "invalid_field",
        "success",
    ),
    "bad timestamp": (
        {"type": "heartbeat", "user_id": USER, "version": "1.0.0", "timestamp": "yesterday"},
        "invalid_field",
        "timestamp",
    ),
    "data not object": ({"type": "heartbeat", "data": "x"}, "invalid_field", "data"),
    "id with spaces": (
        {"type": "feature_used", "id": "a b", "user_id": USER, "version": "1.0.0"},
        "invalid_field",
        "id",
    ),
}


@pytest.mark.parametrize(("obj", "reason", "field"), REJECTS.values(), ids=REJECTS.keys())
def test_rejects_name_the_field(obj: object, reason: str, field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        normalize(obj)
    assert (info.value.reason, info.value.field) == (reason, field)
    assert field in info.value.description
