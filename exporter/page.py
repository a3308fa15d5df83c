"""The HTML page at /: every value that came from a client is escaped."""

from __future__ import annotations

from html import escape

from exporter.stats import build_stats
from exporter.store import DailyRow, Snapshot


def render_page(
    snap: Snapshot, daily: list[DailyRow], latest_version: str, grafana_url: str, now: float
) -> str:
    """Render a minimal page of the headline numbers and breakdowns."""
    stats = build_stats(snap, latest_version, now)
    rows = "".join(
        f"<tr><th scope='row'>{escape(name)}</th><td>{escape(str(value))}</td></tr>"
        for name, value in stats.items()
        if not isinstance(value, dict)
    )
    breakdowns = "".join(
        f"<h2>{escape(key)}</h2><table>"
        + "".join(f"<tr><th scope='row'>{escape(k)}</th><td>{v}</td></tr>" for k, v in stats[key].items())
        + "</table>"
        for key in ("os_breakdown", "version_breakdown", "arch_breakdown")
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>FlakeDrop Telemetry</title></head><body><h1>FlakeDrop Telemetry</h1>"
        f"<table>{rows}</table>{breakdowns}"
        "<p><a href='/stats'>/stats</a> · <a href='/metrics'>/metrics</a></p></body></html>"
    )
