"""The HTML page at /: KPI tiles, server-rendered SVG charts and their tables; every label is escaped."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from importlib import resources
from typing import Any

from exporter import __version__
from exporter.normalize import canonical_version
from exporter.stats import build_stats
from exporter.store import DailyRow, Snapshot

PALETTE = 8  # series colours c0..c7 in page.css; more versions fold into one grey "cx" series
DEFAULT_BASE_URL = "http://your-host:8080"
# A data: favicon, so the browser does not ask for /favicon.ico (no extra route, no 404).
FAVICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    "%3Crect width='16' height='16' rx='3' fill='%233b6fd4'/%3E"
    "%3Cpath d='M8 2.5 11.5 8.2a3.9 3.9 0 1 1-7 0z' fill='%23fff'/%3E%3C/svg%3E"
)
_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?")


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
    """Render the dashboard from one snapshot and the daily rollups; numbers come from build_stats."""
    assets = assets if assets is not None else load_assets()
    stats = build_stats(snap, latest_version, now)
    empty = stats["total_events"] == 0 and stats["unique_users"] == 0
    body = [_empty_state(base_url or DEFAULT_BASE_URL)] if empty else []
    body.append(_tiles(stats))
    if not empty:
        body.append(_cards(stats, daily))
    body.append(_meta(stats))
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta name='color-scheme' content='light dark'>"
        f"<link rel='icon' href=\"{FAVICON}\"><title>FlakeDrop Telemetry</title>"
        f"<style>{assets.css}</style></head><body>"
        f"{_header(grafana_url)}<main id='main'>{''.join(body)}</main>"
        "<footer><p id='live'>Reload the page for fresh numbers.</p></footer>"
        f"<script>{assets.js}</script></body></html>"
    )


# ----- building blocks ---------------------------------------------------------------------------


def _e(value: object) -> str:
    """Escape any value for HTML text and (quoted) attributes, SVG included."""
    return escape(str(value), quote=True)


def _int(value: int) -> str:
    """Format a count with thousands separators."""
    return f"{value:,}"


def _pct(value: float | None) -> str:
    """Format a ratio as a percentage, or an em dash when undefined."""
    return "—" if value is None else f"{value * 100:.1f}%"


def _ratio(part: int, whole: int) -> float | None:
    """Return part/whole rounded like /stats, or None when there is nothing to divide."""
    return round(part / whole, 4) if whole else None


def _stat(stats: Mapping[str, Any], key: str) -> str:
    """Render one /stats value as a <data> element tagged with its key (dotted for nested keys)."""
    value: Any = stats
    for part in key.split("."):
        value = value[part]
    if isinstance(value, float) or value is None:
        text, raw = _pct(value), "" if value is None else repr(value)
    elif isinstance(value, int):
        text, raw = _int(value), str(value)
    else:
        text, raw = str(value), str(value)
    return f"<data data-stat='{_e(key)}' value='{_e(raw)}'>{_e(text)}</data>"


def _header(grafana_url: str) -> str:
    """The title and the links to /stats, /metrics and (when set to an http(s) URL) Grafana."""
    links = [("/stats", "/stats"), ("/metrics", "/metrics")]
    if grafana_url.lower().startswith(("http://", "https://")):
        links.append((grafana_url, "Grafana"))
    items = "".join(f"<li><a href='{_e(href)}'>{_e(text)}</a></li>" for href, text in links)
    return (
        "<header><h1>FlakeDrop Telemetry<small>Opt-in usage of the FlakeDrop CLI</small></h1>"
        f"<nav aria-label='Other views'><ul>{items}</ul></nav></header>"
    )


def _empty_state(base_url: str) -> str:
    """How to send the first event, shown until the store has one."""
    base = _e(base_url.rstrip("/"))
    sample = (
        '{"type":"heartbeat","user_id":"0123456789abcdef0123456789abcdef",'
        '"version":"v1.3.5","os":"linux","arch":"amd64"}'
    )
    return (
        "<section class='card empty' aria-labelledby='empty-h'><h2 id='empty-h'>No events yet</h2>"
        "<p>FlakeDrop sends its opt-in usage events to the server named by the client's "
        "<code>FLAKEDROP_TELEMETRY_ENDPOINT</code> environment variable, as <code>POST /v1/events</code>. "
        "Point it at this server and use FlakeDrop as usual:</p>"
        f"<pre><code>export FLAKEDROP_TELEMETRY_ENDPOINT={base}</code></pre>"
        "<p>Or send one event by hand:</p>"
        f"<pre><code>curl -X POST {base}/v1/events -H 'Content-Type: application/json' \\\n"
        f"  -d '{_e(sample)}'</code></pre>"
        "<p>Or fill it with demo traffic:</p>"
        f"<pre><code>flakedrop-telemetry simulate --url {base} --users 500 --days 14</code></pre>"
        "</section>"
    )


def _tile(title: str, value: str, sub: str, tone: str = "") -> str:
    """One KPI tile."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    cls = f"tile {tone}".strip()
    return (
        f"<section class='{cls}' aria-labelledby='k-{slug}'><h2 id='k-{slug}'>{_e(title)}</h2>"
        f"<p class='big'>{value}</p><p class='sub'>{sub}</p></section>"
    )


def _tiles(stats: Mapping[str, Any]) -> str:
    """The seven KPI tiles, every number a /stats value."""
    rate = stats["success_rate"]
    tone = ""
    if rate is not None and stats["total_deployments"] >= 20:
        tone = "bad" if 1 - rate > 0.25 else "warn" if 1 - rate > 0.10 else "good"
    share = _ratio(stats["users_on_latest"], stats["unique_users"])
    share_el = f"<data data-derived='users_on_latest/unique_users' value='{_e('' if share is None else share)}'>{_pct(share)}</data>"
    tiles = [
        _tile("Unique users", _stat(stats, "unique_users"), "installations, all time"),
        _tile(
            "Active users 7d",
            _stat(stats, "active_users.7d"),
            f"1d: {_stat(stats, 'active_users.1d')} · 30d: {_stat(stats, 'active_users.30d')}",
        ),
        _tile(
            "Deployments",
            _stat(stats, "total_deployments"),
            f"{_stat(stats, 'successful_deploys')} ok · {_stat(stats, 'failed_deploys')} failed",
        ),
        _tile(
            "Success rate",
            _stat(stats, "success_rate"),
            f"of {_stat(stats, 'total_deployments')} deployments",
            tone,
        ),
        _tile(
            "Configs created",
            _stat(stats, "configs_created"),
            f"by {_stat(stats, 'configured_users')} users",
        ),
        _tile(
            "Activation rate",
            _stat(stats, "activation_rate"),
            f"{_stat(stats, 'activated_users')} users deployed",
        ),
        _tile(
            "On latest release",
            share_el,
            f"{_stat(stats, 'users_on_latest')} users on {_stat(stats, 'latest_version')}",
        ),
    ]
    return f"<section class='tiles' aria-label='Key numbers'>{''.join(tiles)}</section>"


def _meta(stats: Mapping[str, Any]) -> str:
    """When the numbers were computed, and the event totals."""
    at = str(stats["generated_at"])
    shown = at.replace("T", " ").replace("Z", " UTC")
    return (
        f"<p class='meta'>Computed from the store's aggregates at <time datetime='{_e(at)}'>{_e(shown)}</time>"
        f" · {_stat(stats, 'total_events')} events accepted · {_stat(stats, 'heartbeats')} heartbeats"
        f" · flakedrop-telemetry {_e(__version__)}</p>"
    )


def _cards(stats: Mapping[str, Any], daily: list[DailyRow]) -> str:
    """The charts: deployments per day, version adoption, and the user breakdowns."""
    latest = canonical_version(str(stats["latest_version"]))
    cards = [
        _deployments_card(daily),
        _adoption_card(daily, latest),
        _breakdown_card("Users by OS", "OS", "os_breakdown", stats["os_breakdown"], "", "users"),
        _breakdown_card(
            "Users by version", "Version", "version_breakdown", stats["version_breakdown"], latest, "users"
        ),
        _breakdown_card("Users by CPU", "Arch", "arch_breakdown", stats["arch_breakdown"], "", "users"),
        _breakdown_card("Events by type", "Type", "events_by_type", stats["events_by_type"], "", "events"),
    ]
    return f"<div class='cards'>{''.join(cards)}</div>"


# ----- charts ------------------------------------------------------------------------------------


def _nice_max(value: int) -> int:
    """Return a round axis maximum at or above value whose half is a whole number."""
    if value <= 2:
        return 2
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (2, 4, 6, 8, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _short_day(day: str) -> str:
    """Format YYYY-MM-DD as 'Nov 28' (or echo it when it is not a date)."""
    try:
        return time.strftime("%b %d", time.strptime(day, "%Y-%m-%d")).replace(" 0", " ")
    except ValueError:
        return day


def _figure(title: str, svg_body: str, columns: int, ticks: tuple[str, str, str], days: list[str]) -> str:
    """A chart: the stretched SVG plot, an HTML y axis (top, middle, bottom) and first/middle/last days."""
    grid = "".join(f"<line x1='0' x2='{columns * 10}' y1='{y}' y2='{y}'/>" for y in (0, 50, 100))
    xs = [days[0], days[len(days) // 2], days[-1]] if days else []
    return (
        "<figure class='chart'>"
        f"<div class='yaxis' aria-hidden='true'>{''.join(f'<span>{_e(t)}</span>' for t in ticks)}</div>"
        f"<svg class='plot' viewBox='0 0 {columns * 10} 100' preserveAspectRatio='none' role='img'>"
        f"<title>{_e(title)}</title>{grid}{svg_body}</svg>"
        f"<div class='xaxis' aria-hidden='true'>{''.join(f'<span>{_e(_short_day(d))}</span>' for d in xs)}</div>"
        "</figure>"
    )


def _deployments_card(daily: list[DailyRow]) -> str:
    """Deployments per day, success stacked under failure, with the table behind it."""
    ok_total = sum(row.deployments_success for row in daily)
    bad_total = sum(row.deployments_failure for row in daily)
    head = (
        "<section class='card wide' aria-labelledby='c-deploy'><h2 id='c-deploy'>Deployments per day</h2>"
        f"<p class='note'>Last {len(daily)} days (UTC), by the day the server received them.</p>"
    )
    if ok_total + bad_total == 0:
        return head + f"<p class='nodata'>No deployments in the last {len(daily)} days.</p></section>"
    top = _nice_max(max(row.deployments_success + row.deployments_failure for row in daily))
    bars = []
    for i, row in enumerate(daily):
        total = row.deployments_success + row.deployments_failure
        ok_h = row.deployments_success / top * 100
        bad_h = row.deployments_failure / top * 100
        tip = f"{row.day}: {total:,} deployments, {row.deployments_success:,} ok, {row.deployments_failure:,} failed"
        shapes = f"<rect class='hit' x='{i * 10}' y='0' width='10' height='100'/>"
        if row.deployments_success:
            shapes += (
                f"<rect class='ok' x='{i * 10 + 1.5}' y='{100 - ok_h:.3f}' width='7' height='{ok_h:.3f}'/>"
            )
        if row.deployments_failure:
            y = 100 - ok_h - bad_h
            shapes += f"<rect class='bad' x='{i * 10 + 1.5}' y='{y:.3f}' width='7' height='{bad_h:.3f}'/>"
        bars.append(f"<g><title>{_e(tip)}</title>{shapes}</g>")
    title = f"Deployments per day: {ok_total:,} ok and {bad_total:,} failed in the last {len(daily)} days"
    legend = (
        "<ul class='legend'><li><span class='sw ok' aria-hidden='true'></span>Succeeded</li>"
        "<li><span class='sw bad' aria-hidden='true'></span>Failed</li></ul>"
    )
    figure = _figure(
        title, "".join(bars), len(daily), (_int(top), _int(top // 2), "0"), [r.day for r in daily]
    )
    rows = "".join(
        f"<tr data-day='{_e(row.day)}'><th scope='row' class='day'>{_e(row.day)}</th>"
        f"<td class='num'>{_int(row.deployments_success)}</td><td class='num'>{_int(row.deployments_failure)}</td>"
        f"<td class='num'>{_int(row.deployments_success + row.deployments_failure)}</td>"
        f"<td class='num'>{_pct(_ratio(row.deployments_failure, row.deployments_success + row.deployments_failure))}</td></tr>"
        for row in reversed(daily)
        if row.deployments_success or row.deployments_failure
    )
    table = (
        "<details id='d-deploy'><summary>Numbers behind the chart</summary><div class='scroll'>"
        "<table id='t-deploy'><caption>Deployments per day, newest first (days without any omitted)</caption>"
        "<thead><tr><th scope='col'>Day</th><th scope='col' class='num'>Ok</th><th scope='col' class='num'>Failed</th>"
        "<th scope='col' class='num'>Total</th><th scope='col' class='num'><abbr title='Failure ratio'>Fail %</abbr></th></tr></thead>"
        f"<tbody>{rows}</tbody><tfoot><tr><th scope='row'>{len(daily)} days</th>"
        f"<td class='num'>{_int(ok_total)}</td><td class='num'>{_int(bad_total)}</td>"
        f"<td class='num' data-total='deployments'>{_int(ok_total + bad_total)}</td>"
        f"<td class='num'>{_pct(_ratio(bad_total, ok_total + bad_total))}</td></tr></tfoot></table></div></details>"
    )
    return head + legend + figure + table + "</section>"


def _version_key(version: str) -> tuple[int, tuple[int, int, int, int, str], str]:
    """Order versions by semver (pre-releases before their release); other labels last, by name."""
    match = _SEMVER.fullmatch(version)
    if match is None:
        return (1, (0, 0, 0, 0, ""), version)
    major, minor, patch, pre = match.groups()
    return (0, (int(major), int(minor), int(patch), 0 if pre else 1, pre or ""), version)


def _adoption_series(daily: list[DailyRow]) -> tuple[list[str], bool]:
    """Pick the versions drawn on their own (newest first), and whether the rest fold into one series."""
    totals: dict[str, int] = {}
    for row in daily:
        for version, users in row.active_by_version.items():
            totals[version] = totals.get(version, 0) + users
    versions = [v for v, n in totals.items() if n > 0]
    folded = len(versions) > PALETTE
    if folded:
        versions = sorted(versions, key=lambda v: (-totals[v], v))[: PALETTE - 1]
    return sorted(versions, key=_version_key, reverse=True), folded


def _adoption_card(daily: list[DailyRow], latest: str) -> str:
    """Version adoption: each day's active users by version, stacked to 100%."""
    head = (
        "<section class='card wide' aria-labelledby='c-adopt'><h2 id='c-adopt'>Version adoption</h2>"
        "<p class='note'>Share of each day's active users by version (UTC days).</p>"
    )
    series, folded = _adoption_series(daily)
    if not series:
        return head + "<p class='nodata'>No active users in the last 30 days.</p></section>"
    rest_name = "other versions"
    names = [*series, *([rest_name] if folded else [])]
    classes = {name: f"c{i}" for i, name in enumerate(series)} | {rest_name: "cx"}
    per_day: list[dict[str, int]] = []
    for row in daily:
        counts = {v: row.active_by_version.get(v, 0) for v in series}
        if folded:
            counts[rest_name] = sum(n for v, n in row.active_by_version.items() if v not in counts)
        per_day.append(counts)
    columns = []
    for i, (row, counts) in enumerate(zip(daily, per_day, strict=True)):
        total = sum(counts.values())
        shapes = [f"<rect class='hit' x='{i * 10}' y='0' width='10' height='100'/>"]
        y = 100.0
        for name in reversed(names):  # oldest at the bottom
            users = counts.get(name, 0)
            if not users:
                continue
            h = users / total * 100
            y -= h
            tip = f"{row.day} · {name}: {users:,} of {total:,} active users ({users / total * 100:.1f}%)"
            shapes.append(
                f"<rect class='{classes[name]}' x='{i * 10 + 1}' y='{y:.3f}' width='8' height='{h:.3f}'>"
                f"<title>{_e(tip)}</title></rect>"
            )
        if total:
            columns.append(f"<g>{''.join(shapes)}</g>")
    legend = "".join(
        f"<li><span class='sw {classes[n]}' aria-hidden='true'></span>{_e(n)}"
        + (" <span class='badge'>latest</span>" if n == latest else "")
        + "</li>"
        for n in names
    )
    figure = _figure(
        "Version adoption: share of active users by version per day",
        "".join(columns),
        len(daily),
        ("100%", "50%", "0%"),
        [r.day for r in daily],
    )
    header_cells = "".join(f"<th scope='col' class='num'>{_e(n)}</th>" for n in names)
    body_rows = "".join(
        f"<tr data-day='{_e(row.day)}'><th scope='row' class='day'>{_e(row.day)}</th>"
        + "".join(f"<td class='num'>{_int(counts.get(n, 0))}</td>" for n in names)
        + f"<td class='num'>{_int(sum(counts.values()))}</td></tr>"
        for row, counts in reversed(list(zip(daily, per_day, strict=True)))
        if sum(counts.values())
    )
    table = (
        "<details id='d-adopt'><summary>Numbers behind the chart</summary><div class='scroll'>"
        "<table id='t-adopt'><caption>Active users per day by version, newest first</caption>"
        f"<thead><tr><th scope='col'>Day</th>{header_cells}<th scope='col' class='num'>All</th></tr></thead>"
        f"<tbody>{body_rows}</tbody></table></div></details>"
    )
    return head + f"<ul class='legend'>{legend}</ul>" + figure + table + "</section>"


def _breakdown_card(
    title: str, label: str, key: str, counts: Mapping[str, int], latest: str, unit: str
) -> str:
    """A breakdown as a table with one bar per row (the table is the chart)."""
    slug = key.replace("_", "-")
    head = f"<section class='card third' aria-labelledby='c-{slug}'><h2 id='c-{slug}'>{_e(title)}</h2>"
    total = sum(counts.values())
    if not total:
        return head + f"<p class='nodata'>No {_e(unit)} yet.</p></section>"
    top = max(counts.values())
    rows = "".join(
        _breakdown_row(key, name, n, total, top, name == latest, unit) for name, n in counts.items()
    )
    return (
        head + f"<table class='bars' data-breakdown='{_e(key)}'><caption>{_int(total)} {_e(unit)}</caption>"
        f"<thead><tr><th scope='col'>{_e(label)}</th>"
        f"<th scope='col' class='num w-num'>{_e(unit.capitalize())}</th>"
        "<th scope='col' class='num w-share'>Share</th>"
        "<th scope='col' class='w-bar'><span class='sr-only'>Bar</span></th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


def _breakdown_row(key: str, name: str, n: int, total: int, top: int, latest: bool, unit: str) -> str:
    """One breakdown row: label, count, share and a bar scaled to the largest row."""
    share = n / total * 100
    width = n / top * 100
    badge = " <span class='badge'>latest</span>" if latest else ""
    tip = f"{name}: {n:,} {unit} ({share:.1f}%)"
    bar = (
        "<svg viewBox='0 0 100 10' preserveAspectRatio='none' role='img'>"
        f"<title>{_e(tip)}</title><rect class='back' width='100' height='10' rx='2'/>"
        f"<rect class='{'latest' if latest else 'fill'}' width='{width:.3f}' height='10' rx='2'/></svg>"
    )
    return (
        f"<tr data-key='{_e(name)}'><th scope='row'>{_e(name)}{badge}</th>"
        f"<td class='num'><data value='{n}'>{_int(n)}</data></td><td class='num'>{share:.1f}%</td>"
        f"<td class='bar'>{bar}</td></tr>"
    )
