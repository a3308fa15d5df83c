"""Read the committed Grafana dashboards: panels, queries and template variables.

Used by the static checks (tests/test_dashboards.py) and by live tests that run every
dashboard query against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
DATASOURCE_UID = "flakedrop-prometheus"

# $name, ${name}, ${name:format} and the deprecated [[name]] / [[name:format]].
VARIABLE_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict[str, Any]]:
    """Return every committed dashboard, keyed by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.json"))
    }


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every panel, rows included, and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Return (panel title, refId, expr) for every Prometheus query of the dashboard."""
    return [
        (panel.get("title", ""), target.get("refId", ""), target["expr"])
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def builtin_variables(range_seconds: int = 3600, step_seconds: int = 60) -> dict[str, str]:
    """Return Grafana's global variables with values for a range of range_seconds."""
    return {
        "__rate_interval": f"{step_seconds}s",
        "__interval": f"{step_seconds}s",
        "__interval_ms": str(step_seconds * 1000),
        "__range": f"{range_seconds}s",
        "__range_s": str(range_seconds),
        "__range_ms": str(range_seconds * 1000),
        "__all": ".+",
    }


def variable_defaults(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Return each template variable's value as Grafana sends it by default (All means its allValue)."""
    values: dict[str, str] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        name, kind = variable["name"], variable.get("type")
        current = variable.get("current") or {}
        value = current.get("value")
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else "|".join(value)
        if kind == "datasource":
            values[name] = DATASOURCE_UID
        elif variable.get("includeAll") and value in (None, "", "$__all"):
            values[name] = variable.get("allValue") or ".+"
        elif value not in (None, ""):
            values[name] = str(value)
        elif variable.get("options"):
            values[name] = str(variable["options"][0]["value"])
        else:
            values[name] = str(variable.get("query", ""))
    return values


def all_variables(
    dashboard: Mapping[str, Any], range_seconds: int = 3600, step_seconds: int = 60
) -> dict[str, str]:
    """Return the built-in and template variables of a dashboard, ready for substitute()."""
    return {**builtin_variables(range_seconds, step_seconds), **variable_defaults(dashboard)}


def used_variables(text: str) -> set[str]:
    """Return the names of the variables a string refers to."""
    return {next(group for group in match.groups() if group) for match in VARIABLE_RE.finditer(text)}


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace every variable reference in expr; raise KeyError for an undefined one."""

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return variables[name]

    return VARIABLE_RE.sub(replace, expr)
