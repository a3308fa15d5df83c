"""The page's retention table, per-run usage and honest labels (issue 14), in HTML and in real Chromium."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import test_page
from hypothesis import given
from hypothesis import strategies as st
from procs import Server
from test_page import (
    OVERFLOW,
    READ_STATS,
    assert_dom_equals_stats,
    get_stats,
    open_page,
    post,
    send_known_traffic,
    user,
)

from exporter import clientbytes
from exporter.aggregates import Cohort, Retention
from exporter.page import SHADES, render_page, retention_table
from exporter.store import Snapshot
from exporter.weeks import week_index, week_label

browser = test_page.browser  # the fixtures, shared with the page's other browser tests
start_server = test_page.start_server
NOW = 1_795_860_000.0  # 2026-11-28, a Saturday
READ_RETENTION = """() => Array.from(document.querySelectorAll('#t-retention tbody tr'), r => ({
    cohort: r.dataset.cohort, users: Number(r.dataset.users),
    retained: Array.from(r.querySelectorAll('td[data-week] data'), d => Number(d.value))}))"""
SHADE_OF = """() => Array.from(document.querySelectorAll('#t-retention td[data-week]'), c => [
    (c.className.match(/\\bs(\\d)\\b/) || [])[1], getComputedStyle(c).backgroundColor])"""


def cohorts_strategy() -> st.SearchStrategy[list[tuple[int, list[int]]]]:
    """Cohorts as (users, retained after week 0), each retained count at most the cohort's size."""
    cohort = st.integers(min_value=0, max_value=10_000).flatmap(
        lambda users: st.tuples(
            st.just(users), st.lists(st.integers(min_value=0, max_value=users), max_size=11)
        )
    )
    return st.lists(cohort, max_size=12)


def retention_of(cohorts: list[tuple[int, list[int]]]) -> Retention:
    """A Retention of consecutive weekly cohorts ending this week, in the interface's shape."""
    first = week_index(NOW) - len(cohorts) + 1
    return Retention(
        period="week",
        cohorts=tuple(
            Cohort(label=week_label(first + i), users=users, retained=(users, *later))
            for i, (users, later) in enumerate(cohorts)
        ),
    )


@given(cohorts_strategy())
def test_retention_cells_are_the_counts_shaded_by_share(cohorts: list[tuple[int, list[int]]]) -> None:
    """Every cell is the cohort's count; its shade is the share's tenth; rows fill to the widest one."""
    retention = retention_of(cohorts)
    table = retention_table(retention)
    widest = max((len(c.retained) for c in retention.cohorts), default=0)
    assert table["weeks"] == list(range(widest))
    assert [row["label"] for row in table["rows"]] == [c.label for c in retention.cohorts], "oldest first"
    for row, cohort in zip(table["rows"], retention.cohorts, strict=True):
        assert [cell["n"] for cell in row["cells"]] == list(cohort.retained)
        assert row["blank"] == widest - len(cohort.retained)
        for cell in row["cells"]:
            if cohort.users == 0:
                assert (cell["share"], cell["shade"]) == (None, 0)
                continue
            share = cell["n"] / cohort.users
            assert cell["share"] == round(share, 4)
            assert 0 <= cell["shade"] < SHADES
            assert (
                cell["shade"] == SHADES - 1 or cell["shade"] <= round(share, 4) * SHADES < cell["shade"] + 1
            )


def page_with(
    counters: dict[tuple[str, str, str, str], int],
    cohorts: dict[tuple[int, int], int] | None = None,
) -> str:
    """Render the page from hand-built aggregates."""
    snap = Snapshot(counters=counters, active={"1d": 1, "7d": 2, "30d": 4}, active_by_version={},
                    cohorts=cohorts or {})  # fmt: skip
    return render_page(snap, [], "v1.3.5", "", NOW)


def text_of(html: str) -> str:
    """The page's text with tags stripped."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_on_latest_says_so_when_the_fleet_reports_one_version() -> None:
    one = {("users", "linux", "1.3.0", "amd64"): 5, ("events", "heartbeat", "", ""): 5}
    assert "data-note='single-version'" in page_with(one)
    assert "says nothing about upgrades" in text_of(page_with(one))
    two = one | {("users", "linux", "1.3.5", "amd64"): 1}
    assert "data-note='single-version'" not in page_with(two)


def test_heartbeats_read_as_cli_runs_and_configs_and_deployments_as_lower_bounds() -> None:
    counters = {
        ("users", "linux", "1.3.0", "amd64"): 3,
        ("heartbeats", "linux", "1.3.0", "amd64"): 40,
        ("events", "heartbeat", "", ""): 40,
        ("events", "deployment", "", ""): 2,
        ("deployments", "linux", "1.3.0", "success"): 2,
        ("configs", "linux", "1.3.0", ""): 1,
    }
    html = page_with(counters)
    text = text_of(html)
    assert "CLI runs (heartbeat)" in text and "40 CLI runs (heartbeats)" in text
    assert "tr data-key='heartbeat'" in html, "the row keeps the /stats key"
    for tile in ("k-deployments", "k-configs-created", "k-activation-rate"):
        section = html.split(f"aria-labelledby='{tile}'")[1].split("</section>")[0]
        assert "data-note='lower-bound'" in section, tile
    assert "the client drops some deployment events" in text


def test_retention_card_renders_the_snapshot_cohorts() -> None:
    this = week_index(NOW)
    cohorts = {(this - 2, 0): 10, (this - 2, 1): 4, (this - 2, 2): 1, (this - 1, 0): 5, (this, 0): 2}
    html = page_with({("users", "linux", "1.3.0", "amd64"): 17}, cohorts)
    rows = html.split("id='t-retention'")[1].split("</tbody>")[0].split("<tr data-cohort=")[1:]
    assert [row.split("'")[1] for row in rows] == [week_label(this - k) for k in (2, 1, 0)]
    first = rows[0]
    assert "class='num cell s9' data-week='0'" in first and "class='num cell s4' data-week='1'" in first
    assert "class='num cell s1' data-week='2'" in first and "40.0%" in first
    assert rows[2].count("class='cell future'") == 2, "the newest cohort has no later weeks yet"
    assert "No cohorts yet" in page_with({("users", "linux", "1.3.0", "amd64"): 1})


# ----- in real Chromium ----------------------------------------------------------------------------


@pytest.mark.slow
def test_retention_and_usage_in_the_page_equal_stats(
    browser: Any, start_server: Callable[..., Server]
) -> None:
    server = start_server()
    send_known_traffic(server.url)
    post(server.url, clientbytes.heartbeat(user(1), "v1.3.5", "linux", "amd64", time.time_ns()))
    stats = get_stats(server.url)
    (cohort,) = stats["retention"]["cohorts"]
    assert cohort == {"cohort": week_label(week_index(time.time())), "users": 5, "retained": [5]}
    watch = open_page(browser, server.url + "/")
    page = watch.page
    assert_dom_equals_stats(page.evaluate(READ_STATS), stats)
    assert page.evaluate(READ_RETENTION) == stats["retention"]["cohorts"]
    assert page.inner_text("[data-stat='runs_per_active_user_1d']") == "1.0", "5 runs by 5 active users"
    assert page.inner_text("[data-stat='stickiness']") == "100.0%"
    assert page.locator("[data-note='lower-bound']").count() >= 4
    (shade,) = page.evaluate(SHADE_OF)
    assert shade[0] == "9" and shade[1] not in ("rgba(0, 0, 0, 0)", "transparent"), "the CSP let the CSS in"
    assert not watch.dialogs and not watch.errors, watch.errors


@pytest.mark.slow
def test_a_full_retention_table_scrolls_in_its_box_on_a_phone(browser: Any) -> None:
    """Twelve cohorts of twelve weeks: the table scrolls inside its card; the page never sideways."""
    this = week_index(NOW)
    cohorts = {(this - 11 + i, k): max(0, 9_000 - 700 * k - 13 * i) for i in range(12) for k in range(12 - i)}
    html = page_with({("users", "linux", "1.3.0", "amd64"): 120_000}, cohorts)
    ctx = browser.new_context(viewport={"width": 375, "height": 812})
    page = ctx.new_page()
    page.set_content(html)
    assert page.evaluate(OVERFLOW)[0] <= 375
    box = page.evaluate(
        "() => { const s = document.querySelector('#t-retention').parentElement;"
        " return [s.scrollWidth, s.clientWidth, getComputedStyle(s).overflowX]; }"
    )
    assert box[0] > box[1] and box[2] == "auto", f"the table scrolls inside its own box: {box}"
    shades = page.evaluate(SHADE_OF)
    assert len(shades) == sum(range(1, 13))
    colours = {cls: colour for cls, colour in shades}
    assert len(set(colours.values())) == len(colours) >= 5, f"each shade step is a distinct colour: {colours}"
    ctx.close()
