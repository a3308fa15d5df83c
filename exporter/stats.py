"""The /stats document: the reference server's keys with their meaning, plus ours, from one snapshot."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from exporter.normalize import canonical_version
from exporter.store import Snapshot
from exporter.store.base import WINDOWS


def _ratio(part: int, whole: int) -> float | None:
    """Return part/whole rounded to 4 places, or None when there is nothing to divide."""
    return round(part / whole, 4) if whole else None


def build_stats(snap: Snapshot, latest_version: str, now: float) -> dict[str, Any]:
    """Compute /stats from the aggregates; breakdowns count users, not events."""
    by_os: Counter[str] = Counter()
    by_version: Counter[str] = Counter()
    by_arch: Counter[str] = Counter()
    for (os_, version, arch), users in snap.family("users").items():
        by_os[os_] += users
        by_version[version] += users
        by_arch[arch] += users
    deployments = snap.family("deployments")
    success = sum(v for (_, _, outcome), v in deployments.items() if outcome == "success")
    failure = sum(v for (_, _, outcome), v in deployments.items() if outcome == "failure")
    unique = sum(by_os.values())
    flags = snap.family("user_flags")
    activated = flags.get(("activated", "", ""), 0)
    latest = canonical_version(latest_version)
    return {
        "unique_users": unique,
        "total_deployments": success + failure,
        "successful_deploys": success,
        "failed_deploys": failure,
        "configs_created": snap.total("configs"),
        "os_breakdown": _positive(by_os),
        "version_breakdown": _positive(by_version),
        "total_events": snap.total("events"),
        "success_rate": _ratio(success, success + failure),
        "active_users": {window: snap.active.get(window, 0) for window in WINDOWS},
        "heartbeats": snap.total("heartbeats"),
        "arch_breakdown": _positive(by_arch),
        "configured_users": flags.get(("configured", "", ""), 0),
        "activated_users": activated,
        "activation_rate": _ratio(activated, unique),
        "latest_version": latest_version,
        "users_on_latest": by_version.get(latest, 0),
        "events_by_type": {kind: v for (kind, _, _), v in sorted(snap.family("events").items())},
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
    }


def _positive(counts: Counter[str]) -> dict[str, int]:
    """Return the non-zero counts, largest first."""
    return {key: value for key, value in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if value > 0}
