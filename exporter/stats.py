"""The /stats document: the reference server's keys with their meaning, plus ours, from the aggregates view."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from exporter.aggregates import Aggregates, Folding, positive, runs_per_active_user
from exporter.store import DailyRow, Store

STATS_DAYS = 2  # daily rows /stats reads: the last full day and the current one


def last_day(daily: Sequence[DailyRow]) -> DailyRow | None:
    """Return the last full day of rollups when it had active users, else the current day (None without rows)."""
    if len(daily) >= 2 and daily[-2].active_users:
        return daily[-2]
    return daily[-1] if daily else None


def stats_document(view: Aggregates, daily: Sequence[DailyRow]) -> dict[str, Any]:
    """Return /stats for one view and the last days of rollups (oldest first); breakdowns count users."""
    day = last_day(daily)
    return {
        "unique_users": view.unique_users,
        "total_deployments": view.total_deployments,
        "successful_deploys": view.deployments_success,
        "failed_deploys": view.deployments_failure,
        "configs_created": view.configs_created,
        "os_breakdown": positive(view.users_by_os),
        "version_breakdown": positive(view.users_by_version),
        "total_events": view.total_events,
        "success_rate": view.success_rate,
        "active_users": dict(view.active),
        "heartbeats": view.heartbeats_total,
        "arch_breakdown": positive(view.users_by_arch),
        "configured_users": view.configured_users,
        "activated_users": view.activated_users,
        "activation_rate": view.activation_rate,
        "latest_version": view.latest_version,
        "users_on_latest": view.users_on_latest,
        "events_by_type": dict(view.events_by_type),
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(view.now)),
        "retention": view.retention.to_dict(),
        "stickiness": view.stickiness,
        "runs_per_active_user_1d": runs_per_active_user(day) if day is not None else None,
    }


def read_stats(store: Store, folding: Folding, now: float) -> dict[str, Any]:
    """Return /stats as the endpoint serves it: one folded snapshot and the last STATS_DAYS daily rows."""
    return stats_document(folding.read(store, now), store.daily(STATS_DAYS, now))
