"""Build the FlakeDrop Grafana dashboards with grafana-foundation-sdk and write them as JSON.

The boards are in grafana/usage_boards.py and grafana/ops_boards.py, built from grafana/panels.py.
Run `python grafana/dashboards.py` to rewrite grafana/dashboards/*.json after editing them,
or `python grafana/dashboards.py --check` to fail when the committed JSON is stale.
The committed JSON is what Grafana provisions; tests/test_dashboards.py keeps the two in step.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from ops_boards import exporter, reliability
from usage_boards import overview, releases

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"

BOARDS: tuple[tuple[str, Callable[[], dashboard_builders.Dashboard]], ...] = (
    ("overview.json", overview),
    ("releases.json", releases),
    ("reliability.json", reliability),
    ("exporter.json", exporter),
)


def to_dict(builder: dashboard_builders.Dashboard) -> dict[str, Any]:
    """Return the dashboard as plain JSON data, with panel ids numbered and a null dashboard id."""
    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    data["id"] = None
    next_id = 1
    for panel in data.get("panels", []):
        for item in [panel, *panel.get("panels", [])]:
            item["id"] = next_id
            next_id += 1
    return data


def build_all() -> dict[str, dict[str, Any]]:
    """Return every dashboard, keyed by its file name under grafana/dashboards/."""
    return {name: to_dict(build()) for name, build in BOARDS}


def render(data: dict[str, Any]) -> str:
    """Return the canonical JSON text of a dashboard (sorted keys, two-space indent)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dashboards, or with --check report stale files and exit 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file is stale")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR, help="output directory")
    args = parser.parse_args(argv)
    stale = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in build_all().items():
        path = args.out / name
        text = render(data)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run `python grafana/dashboards.py`", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
