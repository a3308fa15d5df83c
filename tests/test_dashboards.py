"""Static checks of the Grafana dashboards and provisioning (no Grafana needed)."""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from dashboard_tools import (
    DASHBOARD_DIR,
    DATASOURCE_UID,
    ROOT,
    all_variables,
    builtin_variables,
    iter_panels,
    load_dashboards,
    panel_queries,
    substitute,
    used_variables,
)
from support import in_ci

promql_parser = pytest.importorskip(
    "promql_parser", reason="pip install promql-parser (see docs/dashboards.md)"
)

EXPECTED = {
    "overview.json": "flakedrop-overview",
    "releases.json": "flakedrop-releases",
    "reliability.json": "flakedrop-reliability",
    "exporter.json": "flakedrop-exporter",
}
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "piechart", "text", "alertlist", "row"}
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# Range windows a dashboard may use: Grafana's own, so panels follow the time picker and scrape interval.
ALLOWED_WINDOWS = {"$__rate_interval", "$__range", "$__interval"}
COUNTER_FUNCTIONS = {"rate", "increase", "irate"}
# Series that are not flakedrop_* families but are fine to query.
PROMETHEUS_SERIES = {"ALERTS", "ALERTS_FOR_STATE", "up", "scrape_duration_seconds", "scrape_samples_scraped"}
CONTRACT = ROOT / "docs" / "metrics-contract.md"
PROVISIONING = ROOT / "grafana" / "provisioning"
COMPOSE = ROOT / "docker-compose.yml"
RULES_DIR = ROOT / "prometheus" / "rules"
DASHBOARDS = load_dashboards()


def load_builder() -> ModuleType:
    """Import grafana/dashboards.py and its sibling modules (they need grafana-foundation-sdk)."""
    if str(ROOT / "grafana") not in sys.path:
        sys.path.insert(0, str(ROOT / "grafana"))  # as `python grafana/dashboards.py` has it
    spec = importlib.util.spec_from_file_location("flakedrop_dashboards", ROOT / "grafana" / "dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's classic Dashboard builder
        spec.loader.exec_module(module)
    return module


def contract_families() -> dict[str, dict[str, Any]]:
    """Return {family: {"kind": "store"|"local", "type": ..., "labels": set}} from the metrics contract."""
    families: dict[str, dict[str, Any]] = {}
    kind = ""
    for line in CONTRACT.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            kind = "store" if "Store-backed" in line else "local" if "Process-local" in line else ""
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if kind and len(cells) >= 3 and re.fullmatch(r"`flakedrop_\w+`", cells[0]):
            families[cells[0].strip("`")] = {
                "kind": kind,
                "type": cells[1].split()[0],
                "labels": set(re.findall(r"`(\w+)`", cells[2])),
            }
    return families


def contract_thresholds() -> tuple[float, float]:
    """Return the (warning, critical) fleet failure-ratio thresholds stated in the contract."""
    text = CONTRACT.read_text(encoding="utf-8")
    match = re.search(r"warning above `([\d.]+)`, critical above `([\d.]+)`", text)
    assert match, "docs/metrics-contract.md no longer states the failure-ratio thresholds"
    return float(match.group(1)), float(match.group(2))


def rule_files() -> list[dict[str, Any]]:
    """Return the parsed Prometheus rule files, or skip when prometheus/rules has not landed."""
    files = sorted(RULES_DIR.glob("*.yml")) + sorted(RULES_DIR.glob("*.yaml"))
    if not files:
        message = f"{RULES_DIR} has no rule files yet"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return [yaml.safe_load(path.read_text(encoding="utf-8")) for path in files]


def selectors(expr: Any) -> Iterator[tuple[Any, list[Any]]]:
    """Yield every vector selector of a parsed query with its ancestors, outermost first."""
    stack: list[Any] = []
    found: list[tuple[Any, list[Any]]] = []

    def pre(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node, list(stack)))
        stack.append(node)

    def post(node: Any) -> None:
        stack.pop()

    promql_parser.walk(expr, pre, post)
    yield from found


def all_queries() -> list[tuple[str, str, str, str]]:
    """Return (file, panel title, refId, expr) for every query of every dashboard."""
    return [(name, *row) for name, dashboard in DASHBOARDS.items() for row in panel_queries(dashboard)]


def query_id(row: tuple[str, str, str, str]) -> str:
    """Return a readable pytest id for a query row."""
    return f"{row[0]}:{row[1]}:{row[2]}"


def parsed(row: tuple[str, str, str, str]) -> Any:
    """Return the AST of a query after substituting the dashboard's default variables."""
    name, _, _, expr = row
    return promql_parser.parse(substitute(expr, all_variables(DASHBOARDS[name])))


QUERIES = all_queries()


def test_committed_json_matches_generated() -> None:
    """The committed JSON is exactly what grafana/dashboards.py generates."""
    try:
        import grafana_foundation_sdk  # noqa: F401
    except ImportError:
        message = (
            "GRAFANA SDK MISSING: cannot check that grafana/dashboards/*.json matches grafana/dashboards.py; "
            "pip install grafana-foundation-sdk==0.0.21"
        )
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    generated = load_builder().build_all()
    assert sorted(generated) == sorted(DASHBOARDS), "run `python grafana/dashboards.py`"
    for name, data in generated.items():
        assert data == DASHBOARDS[name], f"{name} is stale: run `python grafana/dashboards.py`"


def test_the_four_boards_exist_with_unique_titles_and_uids() -> None:
    """Overview, Releases, Reliability and Exporter health exist, with unique titles and uids."""
    assert {name: board["uid"] for name, board in DASHBOARDS.items()} == EXPECTED
    titles = [board["title"] for board in DASHBOARDS.values()]
    assert len(set(titles)) == len(titles)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_settings(name: str) -> None:
    """Boards are provisioning-ready: null id, short uid, read-only, current schema, tagged."""
    board = DASHBOARDS[name]
    assert board["id"] is None
    assert 0 < len(board["uid"]) <= 40 and re.fullmatch(r"[a-z0-9-]+", board["uid"])
    assert board["editable"] is False
    assert board["schemaVersion"] >= 39
    assert board["title"] and board["description"]
    assert "flakedrop" in board["tags"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panels_are_complete(name: str) -> None:
    """Every panel has a unique id and title, an allowed type, a description, a unit and the datasource."""
    panels = list(iter_panels(DASHBOARDS[name]))
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(panel_id, int) and panel_id > 0 for panel_id in ids)
    assert len(set(ids)) == len(ids), "duplicate panel ids"
    titles = [panel.get("title", "") for panel in panels]
    assert all(titles) and len(set(titles)) == len(titles), f"missing or duplicate titles: {titles}"
    for panel in panels:
        where = f"{name}: {panel['title']}"
        assert panel["type"] in PANEL_TYPES, where
        if panel["type"] == "row":
            continue
        assert panel.get("description", "").strip(), f"{where}: no description"
        assert panel.get("fieldConfig", {}).get("defaults", {}).get("unit"), f"{where}: no unit"
        if panel["type"] != "text":
            assert panel.get("datasource") == DATASOURCE_REF, where
            assert panel.get("targets"), f"{where}: no query"
        ref_ids = [target.get("refId") for target in panel.get("targets", [])]
        assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), f"{where}: refIds {ref_ids}"
        for target in panel.get("targets", []):
            assert target.get("datasource") == DATASOURCE_REF, where


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_grid_positions_fit_and_do_not_overlap(name: str) -> None:
    """Panels lie within the 24-column grid and no two panels overlap."""
    cells: dict[tuple[int, int], str] = {}
    for panel in DASHBOARDS[name]["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["y"] >= 0 and pos["w"] > 0 and pos["h"] > 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} overflows the grid: {pos}"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_template_variables(name: str) -> None:
    """A datasource variable, and os/version (or job) label variables whose All matches every value."""
    variables = {variable["name"]: variable for variable in DASHBOARDS[name]["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    assert datasource["current"]["value"] == DATASOURCE_UID
    labels = ["job"] if name == "exporter.json" else ["os", "version"]
    for label in labels:
        variable = variables[label]
        assert variable["type"] == "query"
        assert variable["query"].startswith("label_values(") and variable["query"].endswith(f", {label})")
        assert variable["multi"] and variable["includeAll"]
        # job: All expands to the listed values (only jobs exposing flakedrop_build_info), never `.+`,
        # which would also match Prometheus' own job.
        assert variable.get("allValue") == (None if label == "job" else ".+")
        assert variable["datasource"] == DATASOURCE_REF


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_variable_used_is_defined(name: str) -> None:
    """Queries, titles, descriptions and variable queries refer only to defined or built-in variables."""
    board = DASHBOARDS[name]
    defined = set(all_variables(board)) | set(builtin_variables())
    texts = [variable.get("query", "") for variable in board["templating"]["list"]]
    texts += [str(variable.get("datasource", {}).get("uid", "")) for variable in board["templating"]["list"]]
    for panel in iter_panels(board):
        texts += [panel.get("title", ""), panel.get("description", ""), str(panel.get("datasource", ""))]
        texts += [
            target.get("expr", "") + target.get("legendFormat", "") for target in panel.get("targets", [])
        ]
    undefined = set().union(*(used_variables(str(text)) for text in texts)) - defined
    assert not undefined, f"undefined variables: {sorted(undefined)}"


@pytest.mark.parametrize("row", QUERIES, ids=query_id)
def test_query_parses(row: tuple[str, str, str, str]) -> None:
    """Every query is valid PromQL once Grafana has substituted the variables."""
    parsed(row)


def test_there_are_queries() -> None:
    """The parametrized query checks ran over something."""
    assert len(QUERIES) >= 30


@pytest.mark.parametrize("row", QUERIES, ids=query_id)
def test_query_windows_follow_grafana(row: tuple[str, str, str, str]) -> None:
    """Range windows are $__rate_interval or $__range, never a hard-coded duration."""
    windows = set(re.findall(r"\[([^\]]+)\]", row[3]))
    assert windows <= ALLOWED_WINDOWS, f"hard-coded windows {windows - ALLOWED_WINDOWS}"


@pytest.mark.parametrize("row", QUERIES, ids=query_id)
def test_counters_only_inside_rate_or_increase(row: tuple[str, str, str, str]) -> None:
    """A `_total` counter or histogram `_bucket` is only read through rate()/increase()."""
    for selector, ancestors in selectors(parsed(row)):
        name = selector.name or ""
        if not name.endswith(("_total", "_bucket")):
            continue
        assert len(ancestors) >= 2, f"{name} read raw"
        matrix, call = ancestors[-1], ancestors[-2]
        assert isinstance(matrix, promql_parser.MatrixSelector), f"{name} read raw"
        assert isinstance(call, promql_parser.Call) and call.func.name in COUNTER_FUNCTIONS, name


@pytest.mark.parametrize("row", QUERIES, ids=query_id)
def test_metrics_and_labels_are_in_the_contract(row: tuple[str, str, str, str]) -> None:
    """Every series queried is a contract family (or Prometheus' own), filtered only by its labels."""
    families = contract_families()
    for selector, _ in selectors(parsed(row)):
        name = selector.name or ""
        if name in PROMETHEUS_SERIES or name.startswith("flakedrop:"):
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        family = families.get(name) or families.get(base)
        assert family, f"{name} is not in docs/metrics-contract.md"
        allowed = family["labels"] | {"job", "instance"} | ({"le"} if name.endswith("_bucket") else set())
        used = {matcher.name for matcher in selector.matchers.matchers}
        assert used <= allowed, f"{name} has no labels {used - allowed}"


@pytest.mark.parametrize("row", QUERIES, ids=query_id)
def test_replicas_are_aggregated_as_the_contract_says(row: tuple[str, str, str, str]) -> None:
    """Store-backed families are deduplicated with max first; process-local ones are never max-ed."""
    families = contract_families()
    for selector, ancestors in selectors(parsed(row)):
        family = families.get(re.sub(r"_(bucket|sum|count)$", "", selector.name or ""))
        if not family:
            continue
        aggregates = [node for node in ancestors if isinstance(node, promql_parser.AggregateExpr)]
        if family["kind"] == "store":
            assert aggregates, f"{selector.name} is store-backed: wrap it in max without (instance)"
            inner = aggregates[-1]
            assert str(inner.op) == "max", (
                f"{selector.name} is store-backed: the first aggregation must be max"
            )
            modifier = inner.modifier
            if modifier is None:
                continue  # a plain max() collapses instance too
            if modifier.type == promql_parser.AggModifierType.Without:
                assert modifier.labels == ["instance"], f"{selector.name}: max without (instance)"
            else:
                assert "instance" not in modifier.labels, f"{selector.name}: max by (...) must drop instance"
        else:
            assert all(str(node.op) != "max" for node in aggregates), (
                f"{selector.name} is per replica: sum it"
            )


def test_reliability_draws_the_alert_thresholds() -> None:
    """Failure-ratio time series on the Reliability board draw the contract's thresholds as lines."""
    warning, critical = contract_thresholds()
    ratio_panels = [
        panel
        for panel in iter_panels(DASHBOARDS["reliability.json"])
        if panel["type"] == "timeseries" and "failure ratio" in panel["title"].lower()
    ]
    assert len(ratio_panels) >= 3, "fleet, by OS and by version"
    for panel in ratio_panels:
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["custom"]["thresholdsStyle"]["mode"] in ("line", "dashed", "line+area"), panel[
            "title"
        ]
        steps = {step["value"] for step in defaults["thresholds"]["steps"]}
        assert {warning, critical} <= steps, panel["title"]
        assert defaults["unit"] == "percentunit"


def test_reliability_lists_firing_alerts() -> None:
    """The Reliability board shows the FlakeDrop alerts that are firing."""
    exprs = [expr for _, _, expr in panel_queries(DASHBOARDS["reliability.json"])]
    assert any('ALERTS{alertname=~"FlakeDrop.*",alertstate="firing"}' in expr for expr in exprs)


def test_recording_rules_used_exist() -> None:
    """Every recording rule a dashboard reads is defined in prometheus/rules."""
    recorded = {
        rule["record"]
        for document in rule_files()
        for group in document.get("groups", [])
        for rule in group.get("rules", [])
        if "record" in rule
    }
    used = {name for name in re.findall(r"flakedrop:[\w:]+", " ".join(expr for *_, expr in QUERIES))}
    assert used, "no recording rule used (then drop this test)"
    assert used <= recorded, f"undefined recording rules: {sorted(used - recorded)}"


def test_firing_alert_filter_matches_the_alert_names() -> None:
    """The ALERTS filter FlakeDrop.* matches every alert in prometheus/rules."""
    alerts = {
        rule["alert"]
        for document in rule_files()
        for group in document.get("groups", [])
        for rule in group.get("rules", [])
        if "alert" in rule
    }
    assert alerts and all(re.fullmatch(r"FlakeDrop.*", alert) for alert in alerts), alerts


def compose_services() -> dict[str, Any]:
    """Return the services of docker-compose.yml."""
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]


def mount_target(service: dict[str, Any], source: str) -> str:
    """Return where a service mounts a host path (given relative to the repository)."""
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        if parts[0] == source:
            return parts[1]
    raise AssertionError(f"{source} is not mounted")


def test_datasource_provisioning() -> None:
    """One default Prometheus datasource, with the dashboards' uid, pointing at compose's Prometheus."""
    document = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    sources = document["datasources"]
    defaults = [source for source in sources if source.get("isDefault")]
    assert len(defaults) == 1
    source = defaults[0]
    assert source["type"] == "prometheus" and source["uid"] == DATASOURCE_UID
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose_services()
    # Grafana reaches Prometheus on the compose network at its container port (published on loopback only).
    assert any(str(port).split(":")[-1] == "9090" for port in compose_services()["prometheus"]["ports"])


def test_dashboard_provisioning_matches_compose_mounts() -> None:
    """The file provider reads the directory compose mounts grafana/dashboards into, read-only in the UI."""
    document = yaml.safe_load((PROVISIONING / "dashboards" / "flakedrop.yml").read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    (provider,) = document["providers"]
    assert provider["type"] == "file" and provider["folder"] == "FlakeDrop"
    assert provider["allowUiUpdates"] is False
    grafana = compose_services()["grafana"]
    dashboards_target = mount_target(grafana, "./grafana/dashboards")
    assert provider["options"]["path"] == dashboards_target
    assert mount_target(grafana, "./grafana/provisioning") == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_target}/overview.json"
    assert (DASHBOARD_DIR / Path(home).name).is_file()


def test_documentation_names_every_board() -> None:
    """docs/dashboards.md describes each board by its title."""
    text = (ROOT / "docs" / "dashboards.md").read_text(encoding="utf-8")
    for board in DASHBOARDS.values():
        assert board["title"] in text, board["title"]


def test_every_threshold_drawn_is_a_contract_number() -> None:
    """Stat, bar and line thresholds on every board come from exporter/contract.py (or 1 for 'any alert')."""
    from exporter import contract

    allowed = {v for k, v in vars(contract).items() if k.isupper() and isinstance(v, float)} | {1}
    drawn = {
        step["value"]
        for dashboard in DASHBOARDS.values()
        for panel in iter_panels(dashboard)
        for step in panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
        if step["value"] is not None
    }
    assert drawn and drawn <= allowed, drawn - allowed
    assert {contract.UPGRADE_LAG_WARNING, contract.UPGRADE_LAG_CRITICAL} <= drawn
