"""The shipped FlakeDrop client's exact request bodies (Go json.Marshal output), for simulate, tests and benches."""

from __future__ import annotations

import json
import time

USER_AGENT = "FlakeDrop/{version}"


def go_time(ns: int) -> str:
    """Format Unix nanoseconds as Go's time.Time JSON (RFC 3339, trailing fractional zeros trimmed)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def _compact(value: object) -> str:
    """Encode like Go's json.Marshal: compact, no spaces, no HTML escaping differences for our values."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _envelope(payload: str, kind: str) -> bytes:
    """Wrap a payload the way the client does: the map keys data and type, sorted."""
    return ('{"data":{"data":' + payload + '},"type":' + _compact(kind) + "}").encode("utf-8")


def heartbeat(
    user_id: str, version: str, os: str, arch: str, ts_ns: int, metrics: dict | None = None
) -> bytes:
    """A heartbeat: a Go struct, so fields in declaration order; metrics only at the higher analytics level."""
    parts = [
        f'"version":{_compact(version)}',
        f'"os":{_compact(os)}',
        f'"arch":{_compact(arch)}',
        f'"user_id":{_compact(user_id)}',
        f'"timestamp":{_compact(go_time(ts_ns))}',
    ]
    if metrics is not None:
        inner = ",".join(
            f'"{key}":{_compact(metrics[key])}'
            for key in ("total_deployments", "weekly_deployments", "last_active_date", "error_rate")
        )
        parts.append('"metrics":{' + inner + "}")
    return _envelope("{" + ",".join(parts) + "}", "heartbeat")


def config_created(user_id: str, version: str, ts_ns: int) -> bytes:
    """A config_created event: a Go map, so keys sorted; no os."""
    payload = {
        "config_type": "initial_setup",
        "event": "config_created",
        "timestamp": go_time(ts_ns),
        "user_id": user_id,
        "version": version,
    }
    return _envelope(_compact(dict(sorted(payload.items()))), "config_created")


def deployment(user_id: str, version: str, os: str, success: bool, file_count: int, ts_ns: int) -> bytes:
    """A deployment event: a Go map, so keys sorted; envelope type deployment, payload event real_deployment."""
    payload = {
        "event": "real_deployment",
        "file_count": file_count,
        "os": os,
        "success": success,
        "timestamp": go_time(ts_ns),
        "user_id": user_id,
        "version": version,
    }
    return _envelope(_compact(dict(sorted(payload.items()))), "deployment")
