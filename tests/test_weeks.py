"""ISO week arithmetic: indexes agree with the calendar, labels with isocalendar(), across New Year."""

from __future__ import annotations

import datetime

from hypothesis import given
from hypothesis import strategies as st

from exporter.weeks import week_index, week_label, week_start


def ts(text: str) -> float:
    """Return the Unix time of an ISO UTC timestamp."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


def test_new_year_2026_w53_and_2027_w01() -> None:
    """2026 has 53 ISO weeks: its last runs to Sunday 2027-01-03, then 2027-W01 starts on Monday."""
    assert week_label(week_index(ts("2026-12-28T00:00:00"))) == "2026-W53"
    assert week_label(week_index(ts("2027-01-01T12:00:00"))) == "2026-W53"
    assert week_label(week_index(ts("2027-01-03T23:59:59"))) == "2026-W53"
    assert week_label(week_index(ts("2027-01-04T00:00:00"))) == "2027-W01"
    assert week_index(ts("2027-01-04T00:00:00")) == week_index(ts("2027-01-03T23:59:59")) + 1


def test_known_weeks() -> None:
    """The epoch is in week 0 (Monday 1969-12-29), and 2026-10-05 is a Monday starting 2026-W41."""
    assert week_index(0) == 0
    assert week_label(0) == "1970-W01"
    assert week_label(week_index(ts("2026-10-05T10:00:00"))) == "2026-W41"
    assert week_index(ts("2026-10-05T00:00:00")) == week_index(ts("2026-10-04T23:59:59")) + 1
    assert week_label(week_index(ts("2025-12-29T00:00:00"))) == "2026-W01"


@given(st.integers(min_value=0, max_value=4_102_444_800))  # 1970 .. 2100
def test_index_matches_isocalendar(seconds: int) -> None:
    """A time's week label is its UTC date's ISO year-week, and the week starts on a Monday at or before it."""
    when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    year, week, _ = when.date().isocalendar()
    index = week_index(seconds)
    assert week_label(index) == f"{year}-W{week:02d}"
    start = week_start(index)
    assert start <= seconds < start + 7 * 86400
    assert datetime.datetime.fromtimestamp(start, datetime.UTC).weekday() == 0
