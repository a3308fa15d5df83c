"""The reads of the store, each on a cursor of a read connection: aggregate tables only, never user rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from exporter.store.base import WINDOWS, DailyRow, Snapshot
from exporter.store.planner import day_of
from exporter.store.sql import Backend, scalar
from exporter.weeks import MAX_WEEKS, week_index


def read_snapshot(backend: Backend, cur: Any, now: float) -> Snapshot:
    """Read the counters and the active users of each window (hour buckets of the last 30 days)."""
    cur.execute("SELECT family, k1, k2, k3, value FROM counters")
    counters = {(f, a, b, c): int(v) for f, a, b, c, v in cur.fetchall()}
    # Summed in SQL, one row per version: folding ~3k hour buckets in Python was most of a scrape.
    now_hour = int(now) // 3600
    sums = ", ".join(["SUM(CASE WHEN hour > ? THEN users ELSE 0 END)"] * len(WINDOWS))
    cur.execute(
        backend.sql(f"SELECT version, {sums} FROM hours WHERE hour > ? AND users <> 0 GROUP BY version"),
        (*(now_hour - hours for hours in WINDOWS.values()), now_hour - max(WINDOWS.values())),
    )
    active, by_version = active_counts(cur.fetchall())
    week = week_index(now)  # cohorts a fold can show: at most MAX_WEEKS weeks back, none from the future
    cur.execute(
        backend.sql("SELECT cohort, k, users FROM cohorts WHERE cohort > ? AND cohort <= ?"),
        (week - MAX_WEEKS, week),
    )
    cohorts = {(int(cohort), int(k)): int(users) for cohort, k, users in cur.fetchall()}
    return Snapshot(counters=counters, active=active, active_by_version=by_version, cohorts=cohorts)


def active_counts(version_rows: Iterable[Sequence[Any]]) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Fold rows of (version, users active in each window, in WINDOWS order) into totals and by version."""
    active = dict.fromkeys(WINDOWS, 0)
    by_version: dict[tuple[str, str], int] = {}
    for version, *sums in version_rows:
        for window, users in zip(WINDOWS, sums, strict=True):
            users = int(users or 0)
            if users:
                active[window] += users
                by_version[(window, version)] = by_version.get((window, version), 0) + users
    return active, by_version


def read_daily(backend: Backend, cur: Any, days: int, now: float) -> list[DailyRow]:
    """Fold the daily table into one row per day, oldest first, with empty days filled in."""
    names = [day_of(now - 86400 * back) for back in range(days - 1, -1, -1)]
    cur.execute(backend.sql("SELECT day, metric, version, value FROM daily WHERE day >= ?"), (names[0],))
    per_day: dict[str, Counter[str]] = {name: Counter() for name in names}
    versions: dict[str, Counter[str]] = {name: Counter() for name in names}
    for day, metric, version, value in cur.fetchall():
        if day not in per_day:
            continue
        per_day[day][metric] += int(value)
        if metric == "active":
            versions[day][version] += int(value)
    return [
        DailyRow(
            day=name,
            deployments_success=per_day[name]["deployments_success"],
            deployments_failure=per_day[name]["deployments_failure"],
            configs=per_day[name]["configs"],
            new_users=per_day[name]["new_users"],
            active_by_version=dict(versions[name]),
            heartbeats=per_day[name]["heartbeats"],
        )
        for name in names
    ]


def count_users(cur: Any) -> int:
    """Return the number of per-user rows (scans; for tests and benchmarks)."""
    return int(scalar(cur, "SELECT COUNT(*) FROM users") or 0)
