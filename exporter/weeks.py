"""ISO weeks as integers: the one place a Unix time becomes a cohort week and a week becomes its label."""

from __future__ import annotations

import datetime

EPOCH_MONDAY = datetime.date(1969, 12, 29)  # week 0 starts on this Monday (00:00 UTC)
MAX_WEEKS = 62  # bits of a user's active-weeks bitmap: week first_week + k sets bit k, for k < 62


def week_index(ts: float) -> int:
    """Return the ISO week (Monday 00:00 UTC start) of a Unix time, counted from the Monday 1969-12-29."""
    return (int(ts // 86400) + 3) // 7


def week_start(index: int) -> float:
    """Return the Unix time at which week `index` begins (its Monday, 00:00 UTC)."""
    return float((index * 7 - 3) * 86400)


def week_label(index: int) -> str:
    """Return the ISO year-week of a week index, e.g. 2026-W41 (from that Monday's isocalendar())."""
    year, week, _ = (EPOCH_MONDAY + datetime.timedelta(weeks=index)).isocalendar()
    return f"{year}-W{week:02d}"


def week_sql(column: str) -> str:
    """Return week_index() as SQL over an integer Unix-time column (both databases divide integers)."""
    return f"(({column}) / 86400 + 3) / 7"
