"""The HTML page at /: KPI tiles, SVG charts and their tables, rendered by Jinja2 with autoescaping on.

This module computes what the templates draw (chart geometry, table rows, the shown text of each
number); exporter/templates/*.html only lay it out. Every string reaches the HTML through the
template engine, so escaping is the default and no call site has to remember it.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from exporter import __version__
from exporter.aggregates import Aggregates, Retention, fold, positive, ratio, version_key
from exporter.contract import failure_tone
from exporter.stats import stats_document
from exporter.store import DailyRow, Snapshot

PALETTE = 8  # series colours c0..c7 in page.css; more versions fold into one grey "cx" series
DEFAULT_BASE_URL = "https://your-host"
REST_SERIES = "other versions"
# A data: favicon, so the browser does not ask for /favicon.ico (no extra route, no 404).
FAVICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    "%3Crect width='16' height='16' rx='3' fill='%233b6fd4'/%3E"
    "%3Cpath d='M8 2.5 11.5 8.2a3.9 3.9 0 1 1-7 0z' fill='%23fff'/%3E%3C/svg%3E"
)
SAMPLE_EVENT = (
    '{"type":"heartbeat","user_id":"0123456789abcdef0123456789abcdef",'
    '"version":"v1.3.5","os":"linux","arch":"amd64"}'
)
SHADES = 10  # retention cells are shaded s0..s9 in page.css, one step per 10% of the cohort
# What a person reads for an event type: the client sends one heartbeat per CLI run.
EVENT_NAMES = {"heartbeat": "CLI runs (heartbeat)"}
# The hosts the client's update check accepts without FLAKEDROP_ALLOW_CUSTOM_TELEMETRY=true.
CLIENT_BUILTIN_HOSTS = ("telemetry.flakedrop.io", "api.flakedrop.io", "localhost", "127.0.0.1")


@dataclass(frozen=True)
class Assets:
    """The page's CSS and JS, shipped in exporter/static and inlined into every page."""

    css: str
    js: str

    def content_security_policy(self) -> str:
        """Return a CSP allowing exactly these inline assets and same-origin fetches, nothing else."""
        return (
            "default-src 'none'; "
            f"script-src '{_sha256(self.js)}'; style-src '{_sha256(self.css)}'; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )


def _sha256(text: str) -> str:
    """Return a CSP source expression for the SHA-256 of an inline block."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def load_assets() -> Assets:
    """Read page.css and page.js from the installed package (call once, at startup)."""
    static = resources.files("exporter").joinpath("static")
    return Assets(
        css=static.joinpath("page.css").read_text(encoding="utf-8"),
        js=static.joinpath("page.js").read_text(encoding="utf-8"),
    )


def count(value: int) -> str:
    """Format a count with thousands separators."""
    return f"{value:,}"


def pct(value: float | None) -> str:
    """Format a ratio as a percentage, or an em dash when undefined."""
    return "—" if value is None else f"{value * 100:.1f}%"


def short_day(day: str) -> str:
    """Format YYYY-MM-DD as 'Nov 28' (or echo it when it is not a date)."""
    try:
        return time.strftime("%b %d", time.strptime(day, "%Y-%m-%d")).replace(" 0", " ")
    except ValueError:
        return day


def environment(*, autoescape: bool = True) -> jinja2.Environment:
    """Return the template environment (autoescape off exists only so a test can prove it matters)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("exporter", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(count=count, pct=pct, short_day=short_day)
    return env


class Page:
    """Renders the page; built once per app (its environment caches the compiled templates)."""

    def __init__(self, assets: Assets | None = None, *, autoescape: bool = True) -> None:
        self.assets = assets if assets is not None else load_assets()
        self.template = environment(autoescape=autoescape).get_template("page.html")

    def render(self, view: Aggregates, daily: list[DailyRow], grafana_url: str, base_url: str = "") -> str:
        """Render the dashboard from one aggregates view and the daily rollups."""
        stats = stats_document(view, daily)
        links = [("/stats", "/stats"), ("/metrics", "/metrics")]
        if grafana_url.lower().startswith(("http://", "https://")):
            links.append((grafana_url, "Grafana"))
        base = (base_url or DEFAULT_BASE_URL).rstrip("/")
        failure = None if view.success_rate is None else 1 - view.success_rate
        return self.template.render(
            css=Markup(self.assets.css),  # our own files: their CSP hashes need them byte for byte
            js=Markup(self.assets.js),
            favicon=FAVICON,
            links=links,
            empty=view.is_empty,
            base=base,
            http_only=base.lower().startswith("http://"),
            builtin_hosts=CLIENT_BUILTIN_HOSTS,
            sample=SAMPLE_EVENT,
            cells={key: stat_cell(stats, key) for key in STAT_KEYS},
            share=view.latest_share,
            success_tone=failure_tone(failure, view.total_deployments),
            single_version=view.single_version,
            retention=retention_table(view.retention),
            generated_at=stats["generated_at"],
            version=__version__,
            deploy=deployments_chart(daily),
            adopt=adoption_chart(daily, view.latest),
            breakdowns=[
                breakdown("Users by OS", "OS", "os_breakdown", positive(view.users_by_os), "", "users"),
                breakdown(
                    "Users by version",
                    "Version",
                    "version_breakdown",
                    positive(view.users_by_version),
                    view.latest,
                    "users",
                ),
                breakdown(
                    "Users by CPU", "Arch", "arch_breakdown", positive(view.users_by_arch), "", "users"
                ),
                breakdown(
                    "Events by type",
                    "Type",
                    "events_by_type",
                    dict(view.events_by_type),
                    "",
                    "events",
                    EVENT_NAMES,
                ),
            ],
        )


def render_page(
    snap: Snapshot,
    daily: list[DailyRow],
    latest_version: str,
    grafana_url: str,
    now: float,
    *,
    assets: Assets | None = None,
    base_url: str = "",
) -> str:
    """Fold a snapshot and render the page once (tests and tools; the resource keeps one Page)."""
    return Page(assets).render(fold(snap, latest_version, now), daily, grafana_url, base_url)


# ----- what the templates draw ---------------------------------------------------------------------

STAT_KEYS = (
    "unique_users",
    "active_users.1d",
    "active_users.7d",
    "active_users.30d",
    "total_deployments",
    "successful_deploys",
    "failed_deploys",
    "success_rate",
    "configs_created",
    "configured_users",
    "activation_rate",
    "activated_users",
    "users_on_latest",
    "latest_version",
    "total_events",
    "heartbeats",
    "stickiness",
    "runs_per_active_user_1d",
)
PLAIN_FLOATS = frozenset({"runs_per_active_user_1d"})  # floats shown as numbers, not percentages


def per_user(value: float | None) -> str:
    """Format a per-user average with one decimal, or an em dash when undefined."""
    return "—" if value is None else f"{value:,.1f}"


def stat_cell(stats: dict[str, Any], key: str) -> tuple[str, str]:
    """Return (machine value, shown text) of one /stats value (dotted keys reach nested ones)."""
    value: Any = stats
    for part in key.split("."):
        value = value[part]
    if key in PLAIN_FLOATS:
        return ("" if value is None else repr(value)), per_user(value)
    if isinstance(value, float) or value is None:
        return ("" if value is None else repr(value)), pct(value)
    if isinstance(value, int):
        return str(value), count(value)
    return str(value), str(value)


def nice_max(value: int) -> int:
    """Return a round axis maximum at or above value whose half is a whole number."""
    if value <= 2:
        return 2
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (2, 4, 6, 8, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _axis(days: list[str]) -> list[str]:
    """Return the first, middle and last day (the x axis labels)."""
    return [days[0], days[len(days) // 2], days[-1]] if days else []


def deployments_chart(daily: list[DailyRow]) -> dict[str, Any]:
    """Deployments per day: stacked bar geometry (0..100 per column of width 10) and the table rows."""
    ok_total = sum(row.deployments_success for row in daily)
    bad_total = sum(row.deployments_failure for row in daily)
    chart: dict[str, Any] = {
        "days": len(daily),
        "ok": ok_total,
        "bad": bad_total,
        "total": ok_total + bad_total,
    }
    if not chart["total"]:
        return chart
    top = nice_max(max(row.deployments_success + row.deployments_failure for row in daily))
    bars = []
    for i, row in enumerate(daily):
        ok_h = row.deployments_success / top * 100
        bad_h = row.deployments_failure / top * 100
        total = row.deployments_success + row.deployments_failure
        bars.append(
            {
                "x": i * 10,
                "bar_x": i * 10 + 1.5,
                "tip": f"{row.day}: {total:,} deployments, {row.deployments_success:,} ok, "
                f"{row.deployments_failure:,} failed",
                "ok": (f"{100 - ok_h:.3f}", f"{ok_h:.3f}") if row.deployments_success else None,
                "bad": (f"{100 - ok_h - bad_h:.3f}", f"{bad_h:.3f}") if row.deployments_failure else None,
            }
        )
    rows = [
        (row.day, row.deployments_success, row.deployments_failure, ratio(row.deployments_failure, total))
        for row in reversed(daily)
        if (total := row.deployments_success + row.deployments_failure)
    ]
    return chart | {
        "ticks": (count(top), count(top // 2), "0"),
        "axis": _axis([r.day for r in daily]),
        "bars": bars,
        "rows": rows,
        "ratio": ratio(bad_total, ok_total + bad_total),
    }


def adoption_series(daily: list[DailyRow]) -> tuple[list[str], bool]:
    """Pick the versions drawn on their own (newest first), and whether the rest fold into one series."""
    totals: dict[str, int] = {}
    for row in daily:
        for version, users in row.active_by_version.items():
            totals[version] = totals.get(version, 0) + users
    versions = [v for v, n in totals.items() if n > 0]
    folded = len(versions) > PALETTE
    if folded:
        versions = sorted(versions, key=lambda v: (-totals[v], v))[: PALETTE - 1]
    return sorted(versions, key=version_key, reverse=True), folded


def adoption_chart(daily: list[DailyRow], latest: str) -> dict[str, Any]:
    """Version adoption: each day's active users by version, stacked to 100%, and the table rows."""
    series, folded = adoption_series(daily)
    if not series:
        return {"names": []}
    names = [*series, *([REST_SERIES] if folded else [])]
    classes = {name: f"c{i}" for i, name in enumerate(series)} | {REST_SERIES: "cx"}
    per_day: list[dict[str, int]] = []
    for row in daily:
        counts = {v: row.active_by_version.get(v, 0) for v in series}
        if folded:
            counts[REST_SERIES] = sum(n for v, n in row.active_by_version.items() if v not in counts)
        per_day.append(counts)
    columns = []
    for i, (row, counts) in enumerate(zip(daily, per_day, strict=True)):
        total = sum(counts.values())
        if not total:
            continue
        shapes, y = [], 100.0
        for name in reversed(names):  # oldest at the bottom
            users = counts.get(name, 0)
            if not users:
                continue
            h = users / total * 100
            y -= h
            tip = f"{row.day} · {name}: {users:,} of {total:,} active users ({users / total * 100:.1f}%)"
            shapes.append({"cls": classes[name], "y": f"{y:.3f}", "h": f"{h:.3f}", "tip": tip})
        columns.append({"x": i * 10, "bar_x": i * 10 + 1, "shapes": shapes})
    rows = [
        (row.day, [counts.get(n, 0) for n in names], sum(counts.values()))
        for row, counts in reversed(list(zip(daily, per_day, strict=True)))
        if sum(counts.values())
    ]
    return {
        "names": names,
        "legend": [(name, classes[name], name == latest) for name in names],
        "days": len(daily),
        "axis": _axis([r.day for r in daily]),
        "columns": columns,
        "rows": rows,
    }


def retention_table(retention: Retention) -> dict[str, Any]:
    """The retention table: one row per cohort (oldest first), one cell per week since, shaded by share."""
    weeks = max((len(cohort.retained) for cohort in retention.cohorts), default=0)
    rows = []
    for cohort in retention.cohorts:
        cells = []
        for k, n in enumerate(cohort.retained):
            share = ratio(n, cohort.users)
            shade = 0 if share is None else min(SHADES - 1, int(share * SHADES))
            cells.append({"k": k, "n": n, "share": share, "shade": shade})
        rows.append(
            {"label": cohort.label, "users": cohort.users, "cells": cells, "blank": weeks - len(cells)}
        )
    return {"period": retention.period, "weeks": list(range(weeks)), "rows": rows}


def breakdown(
    title: str,
    label: str,
    key: str,
    counts: dict[str, int],
    latest: str,
    unit: str,
    names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A breakdown table with one bar per row, scaled to the largest row (the table is the chart)."""
    total = sum(counts.values())
    top = max(counts.values(), default=0)
    rows = [
        {
            "name": name,
            "shown": (names or {}).get(name, name),
            "n": n,
            "share": f"{n / total * 100:.1f}",
            "width": f"{n / top * 100:.3f}",
            "latest": name == latest,
        }
        for name, n in counts.items()
    ]
    return {"title": title, "label": label, "key": key, "slug": key.replace("_", "-"), "unit": unit,
            "total": total, "rows": rows}  # fmt: skip
