"""The /stats document: the reference server's keys with their meaning, plus ours, from the aggregates view."""

from __future__ import annotations

import time
from typing import Any

from exporter.aggregates import Aggregates, fold, positive
from exporter.store import Snapshot


def stats_document(view: Aggregates) -> dict[str, Any]:
    """Return /stats for one view; breakdowns count users, not events."""
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
    }


def build_stats(snap: Snapshot, latest_version: str, now: float) -> dict[str, Any]:
    """Return /stats straight from a snapshot (folds it; callers holding a view use stats_document)."""
    return stats_document(fold(snap, latest_version, now))
