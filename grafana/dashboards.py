"""Build the FlakeDrop Grafana dashboards with grafana-foundation-sdk and write them as JSON.

Run `python grafana/dashboards.py` to rewrite grafana/dashboards/*.json after editing this file,
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

# The SDK's classic Dashboard builder warns (DeprecationWarning) that dashboardv2 supersedes it;
# Grafana's file provisioning loads the classic JSON model, so that is the one we emit.
from grafana_foundation_sdk.builders import bargauge, piechart, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import piechart as piechart_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

from exporter import contract

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE_UID = "flakedrop-prometheus"
DATASOURCE_VARIABLE = "${datasource}"
TAG = "flakedrop"

# Filters for families that carry os and version labels (flakedrop_users, _deployments_total, ...).
OS_VERSION = 'os=~"$os",version=~"$version"'
FAILED = 'outcome="failure",'
# The alert thresholds of docs/metrics-contract.md, drawn on the Reliability panels, as the rules use them.
WARNING = f"{contract.FAILURE_RATIO_WARNING:.2f}"
CRITICAL = f"{contract.FAILURE_RATIO_CRITICAL:.2f}"

PanelBuilder = Any  # any grafana_foundation_sdk panel builder (timeseries.Panel, stat.Panel, ...)


def datasource() -> common.DataSourceRef:
    """Return the reference every panel and query uses: the dashboard's datasource variable."""
    return common.DataSourceRef(type_val="prometheus", uid=DATASOURCE_VARIABLE)


def query(expr: str, ref_id: str = "A", legend: str = "", instant: bool = False) -> prometheus.Dataquery:
    """Return a Prometheus query; instant queries feed stat, pie, bar gauge and table panels."""
    q = prometheus.Dataquery().expr(expr).ref_id(ref_id).datasource(datasource())
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    return q


def instant_table(expr: str, ref_id: str = "A") -> prometheus.Dataquery:
    """Return an instant query formatted as a table (one row per series)."""
    return (
        prometheus.Dataquery()
        .expr(expr)
        .ref_id(ref_id)
        .datasource(datasource())
        .instant()
        .format(prometheus_models.PromQueryFormat.TABLE)
    )


def steps(warning: float, critical: float | None = None) -> dashboard_builders.ThresholdsConfig:
    """Return absolute thresholds: green, orange from warning, red from critical (when given)."""
    colours = [dashboard_models.Threshold(value=None, color="green")]
    if critical is None:
        colours.append(dashboard_models.Threshold(value=warning, color="red"))
    else:
        colours.append(dashboard_models.Threshold(value=warning, color="orange"))
        colours.append(dashboard_models.Threshold(value=critical, color="red"))
    return dashboard_builders.ThresholdsConfig().mode(dashboard_models.ThresholdsMode.ABSOLUTE).steps(colours)


def ratio_thresholds() -> dashboard_builders.ThresholdsConfig:
    """Return the failure-ratio alert thresholds of the contract: green, warning, critical."""
    return steps(contract.FAILURE_RATIO_WARNING, contract.FAILURE_RATIO_CRITICAL)


def with_basics(
    panel: PanelBuilder, title: str, description: str, unit: str, width: int, height: int
) -> PanelBuilder:
    """Set what every panel must have: title, description, unit, datasource and size."""
    return (
        panel.title(title)
        .description(description)
        .unit(unit)
        .datasource(datasource())
        .span(width)
        .height(height)
    )


def graph(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[prometheus.Dataquery],
    width: int = 12,
    height: int = 8,
    stacking: common.StackingMode | None = None,
    failure_lines: bool = False,
) -> timeseries.Panel:
    """Return a time series panel; failure_lines draws the alert thresholds as lines."""
    panel = with_basics(timeseries.Panel(), title, description, unit, width, height)
    panel = (
        panel.targets(list(targets))
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if stacking is not None:
        panel = panel.stacking(common_builders.StackingConfig().mode(stacking)).fill_opacity(60)
    if failure_lines:
        panel = (
            panel.thresholds(ratio_thresholds())
            .thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)
            )
            .min(0)
        )
    return panel


def single(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[prometheus.Dataquery],
    width: int = 4,
    height: int = 4,
    text_mode: common.BigValueTextMode = common.BigValueTextMode.AUTO,
    thresholds: dashboard_builders.ThresholdsConfig | None = None,
) -> stat.Panel:
    """Return a stat panel showing the last value of each series."""
    panel = with_basics(stat.Panel(), title, description, unit, width, height)
    panel = (
        panel.targets(list(targets))
        .reduce_options(common_builders.ReduceDataOptions().values(False).calcs(["lastNotNull"]))
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(text_mode)
    )
    if thresholds is not None:
        panel = panel.thresholds(thresholds).color_mode(common.BigValueColorMode.BACKGROUND)
    else:
        panel = panel.color_mode(common.BigValueColorMode.NONE)
    return panel


def pie(
    title: str, description: str, unit: str, target: prometheus.Dataquery, width: int = 8
) -> piechart.Panel:
    """Return a donut chart of the last value of each series."""
    panel = with_basics(piechart.Panel(), title, description, unit, width, 8)
    return (
        panel.with_target(target)
        .pie_type(piechart_models.PieChartType.DONUT)
        .reduce_options(common_builders.ReduceDataOptions().values(False).calcs(["lastNotNull"]))
        .legend(
            piechart.PieChartLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
            .values(
                [piechart_models.PieChartLegendValues.VALUE, piechart_models.PieChartLegendValues.PERCENT]
            )
        )
    )


def bars(
    title: str,
    description: str,
    unit: str,
    target: prometheus.Dataquery,
    width: int = 8,
    thresholds: dashboard_builders.ThresholdsConfig | None = None,
) -> bargauge.Panel:
    """Return a horizontal bar gauge of the last value of each series."""
    panel = with_basics(bargauge.Panel(), title, description, unit, width, 8)
    panel = (
        panel.with_target(target)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common_builders.ReduceDataOptions().values(False).calcs(["lastNotNull"]))
        .min(0)
    )
    if thresholds is not None:
        panel = panel.thresholds(thresholds)
    return panel


def grid(
    title: str, description: str, target: prometheus.Dataquery, hidden: Sequence[str], width: int = 24
) -> table.Panel:
    """Return a table of the series of an instant query, hiding the listed columns."""
    panel = with_basics(table.Panel(), title, description, "none", width, 8)
    organize = dashboard_models.DataTransformerConfig(
        id_val="organize", options={"excludeByName": {name: True for name in hidden}}
    )
    return panel.with_target(target).with_transformation(organize)


def datasource_variable() -> dashboard_builders.DatasourceVariable:
    """Return the `datasource` variable: any Prometheus datasource, the provisioned one by default."""
    return (
        dashboard_builders.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(dashboard_models.VariableOption(selected=True, text="Prometheus", value=DATASOURCE_UID))
    )


def label_variable(
    name: str, label: str, query_text: str, all_value: str | None = ".+"
) -> dashboard_builders.QueryVariable:
    """Return a multi-value label variable; All is `all_value`, or the listed values when None."""
    variable = (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .datasource(datasource())
        .query(query_text)
        .definition(query_text)
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(dashboard_models.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )
    return variable.all_value(all_value) if all_value is not None else variable


def os_version_variables() -> list[dashboard_builders.QueryVariable]:
    """Return the `os` and `version` variables (version options follow the chosen os)."""
    return [
        label_variable("os", "OS", "label_values(flakedrop_users, os)"),
        label_variable("version", "Version", 'label_values(flakedrop_users{os=~"$os"}, version)'),
    ]


def board(uid: str, title: str, description: str, time_from: str = "now-24h") -> dashboard_builders.Dashboard:
    """Return a read-only dashboard with the shared settings and links to the other boards."""
    return (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .readonly()
        .timezone("browser")
        .time(time_from, "now")
        .refresh("1m")
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .link(
            dashboard_builders.DashboardLink("FlakeDrop")
            .type(dashboard_models.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


def dedup(series: str) -> str:
    """Return series deduplicated across replicas: every replica serves the same store-backed values."""
    return f"max without (instance) ({series})"


def store_counter(
    metric: str, selector: str = "", window: str = "$__rate_interval", func: str = "rate"
) -> str:
    """Return rate() (or increase()) of a store-backed counter over a window, deduplicated across replicas."""
    matchers = f"{{{selector}}}" if selector else ""
    return dedup(f"{func}({metric}{matchers}[{window}])")


def deployments(selector: str) -> str:
    """Return per-second deployment rates matching a selector, deduplicated across replicas."""
    return store_counter("flakedrop_deployments_total", selector)


def failure_ratio(by: str, window: str = "$__rate_interval") -> str:
    """Return failed / all deployments per `by` labels (empty: fleet-wide) over a window."""
    group = f" by ({by})" if by else ""

    def part(outcome: str) -> str:
        return f"sum{group} ({store_counter('flakedrop_deployments_total', outcome + OS_VERSION, window)})"

    return part(FAILED) + "\n/\n" + part("")


def overview() -> dashboard_builders.Dashboard:
    """Return the Overview board: users, activity, deployments and platform mix."""
    users = dedup(f"flakedrop_users{{{OS_VERSION}}}")
    in_range = store_counter("flakedrop_deployments_total", OS_VERSION, "$__range", "increase")
    successes = store_counter(
        "flakedrop_deployments_total", f'outcome="success",{OS_VERSION}', "$__range", "increase"
    )
    configs = store_counter("flakedrop_configs_created_total", OS_VERSION, "$__range", "increase")
    all_users = f"sum({dedup('flakedrop_users')})"
    return (
        board("flakedrop-overview", "FlakeDrop / Overview", "Who uses FlakeDrop, how much, and on what.")
        .variables([datasource_variable(), *os_version_variables()])
        .with_row(dashboard_builders.Row("Users"))
        .with_panel(
            single(
                "Unique users",
                "Installations ever seen (by their last known os and version), filtered by OS and version.",
                "short",
                [query(f"sum({users})", instant=True)],
            )
        )
        .with_panel(
            single(
                "Active users",
                "Users seen within the last 1, 7 and 30 days "
                "(all OSes and versions: this family has no such labels).",
                "short",
                [
                    query(
                        dedup('flakedrop_active_users{window=~"1d|7d|30d"}'),
                        legend="{{window}}",
                        instant=True,
                    )
                ],
                width=8,
                text_mode=common.BigValueTextMode.VALUE_AND_NAME,
            )
        )
        .with_panel(
            single(
                "Activation",
                "Share of all users who ran at least one real deployment, and share who created a config.",
                "percentunit",
                [
                    query(
                        f"sum({dedup('flakedrop_activated_users')}) / {all_users}",
                        ref_id="A",
                        legend="deployed",
                        instant=True,
                    ),
                    query(
                        f"sum({dedup('flakedrop_configured_users')}) / {all_users}",
                        ref_id="B",
                        legend="configured",
                        instant=True,
                    ),
                ],
                width=8,
                text_mode=common.BigValueTextMode.VALUE_AND_NAME,
            )
        )
        .with_panel(
            single(
                "Users on latest release",
                "Share of all users whose last seen version is the latest release.",
                "percentunit",
                [query(f"sum({dedup('flakedrop_users_on_latest')}) / {all_users}", instant=True)],
            )
        )
        .with_row(dashboard_builders.Row("Deployments"))
        .with_panel(
            single(
                "Deployments in range",
                "Real (non-dry-run) deployments reported in the selected time range.",
                "short",
                [query(f"sum({in_range})", instant=True)],
                width=8,
            )
        )
        .with_panel(
            single(
                "Deployment success rate",
                "Successful / all deployments in the selected time range.",
                "percentunit",
                [query(f"sum({successes})\n/\nsum({in_range})", instant=True)],
                width=8,
            )
        )
        .with_panel(
            single(
                "Configs created",
                "Setups (config_created events) in the selected time range.",
                "short",
                [query(f"sum({configs})", instant=True)],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Deployments per second by outcome",
                "Rate of reported deployments, split into success and failure.",
                "ops",
                [query(f"sum by (outcome) ({deployments(OS_VERSION)})", legend="{{outcome}}")],
            )
        )
        .with_panel(
            graph(
                "Events per second by type",
                "Accepted events per second by event type (all OSes and versions).",
                "ops",
                [
                    query(
                        f"sum by (type) ({store_counter('flakedrop_events_total')})",
                        legend="{{type}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Active users over time",
                "Users seen within each window, over time.",
                "short",
                [query(dedup("flakedrop_active_users"), legend="{{window}}")],
                width=24,
            )
        )
        .with_row(dashboard_builders.Row("Distribution"))
        .with_panel(
            pie(
                "Users by OS",
                "Unique users by their last seen operating system.",
                "short",
                query(f"sum by (os) ({users})", legend="{{os}}", instant=True),
                width=12,
            )
        )
        .with_panel(
            bars(
                "Users by version",
                "Unique users by their last seen FlakeDrop version.",
                "short",
                query(f"sum by (version) ({users})", legend="{{version}}", instant=True),
                width=12,
            )
        )
    )


def releases() -> dashboard_builders.Dashboard:
    """Return the Releases board: adoption of versions and how far users lag the latest release."""
    active = dedup('flakedrop_active_users_by_version{window="$window"}')
    latest = dedup("flakedrop_latest_version_info")
    on_latest = f"sum({active} and on (version) {latest})\n/\nsum({active})"
    not_latest = f"sum({active} unless on (version) {latest})\n/\nsum({active})"
    window = (
        dashboard_builders.CustomVariable("window")
        .label("Active window")
        .values("1d,7d,30d")
        .current(dashboard_models.VariableOption(selected=True, text="7d", value="7d"))
        .options(
            [
                dashboard_models.VariableOption(selected=name == "7d", text=name, value=name)
                for name in ("1d", "7d", "30d")
            ]
        )
    )
    return (
        board(
            "flakedrop-releases",
            "FlakeDrop / Releases",
            "How fast users move to new releases, and whether a release fails more.",
            time_from="now-7d",
        )
        .variables([datasource_variable(), *os_version_variables(), window])
        .with_row(dashboard_builders.Row("Current release"))
        .with_panel(
            single(
                "Latest release",
                "The release configured as latest on the server (--latest-version).",
                "none",
                [
                    query(
                        "max by (version) (flakedrop_latest_version_info)", legend="{{version}}", instant=True
                    )
                ],
                text_mode=common.BigValueTextMode.NAME,
            )
        )
        .with_panel(
            single(
                "Latest release age",
                "Time since the latest release was published (--latest-release-date).",
                "s",
                [query("time() - max(flakedrop_latest_release_timestamp_seconds)", instant=True)],
            )
        )
        .with_panel(
            single(
                "Active users on latest release",
                "Share of users active within $window whose last seen version is the latest release.",
                "percentunit",
                [query(on_latest, instant=True)],
                width=8,
            )
        )
        .with_panel(
            single(
                "Upgrade lag",
                "Share of users active within $window who are not on the latest release.",
                "percentunit",
                [query(not_latest, instant=True)],
                width=8,
                thresholds=steps(contract.UPGRADE_LAG_WARNING, contract.UPGRADE_LAG_CRITICAL),
            )
        )
        .with_row(dashboard_builders.Row("Adoption"))
        .with_panel(
            graph(
                "Version adoption",
                "Each version's share of all users (by last seen version), stacked to 100%.",
                "short",
                [
                    query(
                        f"sum by (version) ({dedup(f'flakedrop_users{{{OS_VERSION}}}')})",
                        legend="{{version}}",
                    )
                ],
                stacking=common.StackingMode.PERCENT,
            )
        )
        .with_panel(
            graph(
                "Active users by version",
                "Users active within $window, by their last seen version (stacked).",
                "short",
                [
                    query(
                        dedup('flakedrop_active_users_by_version{window="$window",version=~"$version"}'),
                        legend="{{version}}",
                    )
                ],
                stacking=common.StackingMode.NORMAL,
            )
        )
        .with_panel(
            graph(
                "Share of active users on latest release",
                "Users active within $window on the latest release, and those lagging behind it.",
                "percentunit",
                [
                    query(on_latest, ref_id="A", legend="on latest"),
                    query(not_latest, ref_id="B", legend="lagging"),
                ],
            )
        )
        .with_panel(
            graph(
                "Failure ratio by version",
                "Failed / all deployments per version; compare a new release against the older ones.",
                "percentunit",
                [query(failure_ratio("version"), legend="{{version}}")],
            )
        )
        .with_panel(
            bars(
                "Failure ratio by version in range",
                "Failed / all deployments per version over the selected time range.",
                "percentunit",
                query(failure_ratio("version", "$__range"), legend="{{version}}", instant=True),
                width=24,
                thresholds=ratio_thresholds(),
            )
        )
    )


def reliability() -> dashboard_builders.Dashboard:
    """Return the Reliability board: failure ratios against the alert thresholds, and firing alerts."""
    firing = 'ALERTS{alertname=~"FlakeDrop.*",alertstate="firing"}'
    return (
        board(
            "flakedrop-reliability",
            "FlakeDrop / Reliability",
            f"Deployment failure ratios with the alert thresholds (warning {WARNING}, critical {CRITICAL}) "
            "and firing alerts.",
        )
        .variables([datasource_variable(), *os_version_variables()])
        .with_row(dashboard_builders.Row("Now"))
        .with_panel(
            single(
                "Fleet failure ratio (1h)",
                "Failed / all deployments over the last hour, as the alert sees it: "
                f"warning above {WARNING}, critical above {CRITICAL} "
                f"(alerts need at least {contract.MIN_DEPLOYMENTS} deployments).",
                "percentunit",
                [query(dedup("flakedrop:deployment_failure_ratio:rate1h"), instant=True)],
                width=8,
                thresholds=ratio_thresholds(),
            )
        )
        .with_panel(
            single(
                "Alerts firing",
                "Number of FlakeDrop alerts firing in Prometheus now.",
                "none",
                [query(f"count({firing}) or vector(0)", instant=True)],
                width=8,
                thresholds=steps(1),
            )
        )
        .with_panel(
            single(
                "Failed deployments",
                "Failed deployments in the selected time range, filtered by OS and version.",
                "short",
                [
                    query(
                        f"sum({store_counter('flakedrop_deployments_total', FAILED + OS_VERSION, '$__range', 'increase')})",
                        instant=True,
                    )
                ],
                width=8,
            )
        )
        .with_row(dashboard_builders.Row("Failure ratio"))
        .with_panel(
            graph(
                "Fleet failure ratio",
                "Failed / all deployments over 1h (the recording rule the alert uses) and over the "
                "panel's rate interval (filtered by OS and version); "
                f"lines at {WARNING} (warning) and {CRITICAL} (critical).",
                "percentunit",
                [
                    query(
                        dedup("flakedrop:deployment_failure_ratio:rate1h"),
                        "A",
                        "1h (alerted)",
                    ),
                    query(failure_ratio(""), "B", "selection"),
                ],
                width=24,
                failure_lines=True,
            )
        )
        .with_panel(
            graph(
                "Failure ratio by OS (1h)",
                f"Failed / all deployments over 1h per OS (recording rule); lines at {WARNING} and {CRITICAL}.",
                "percentunit",
                [
                    query(
                        dedup('flakedrop:deployment_failure_ratio_by_os:rate1h{os=~"$os"}'),
                        legend="{{os}}",
                    )
                ],
                failure_lines=True,
            )
        )
        .with_panel(
            graph(
                "Failure ratio by version (1h)",
                "Failed / all deployments over 1h per version (recording rule); a release regression "
                f"alert fires when one version fails at least {contract.REGRESSION_FACTOR}x as often as the rest.",
                "percentunit",
                [
                    query(
                        dedup('flakedrop:deployment_failure_ratio_by_version:rate1h{version=~"$version"}'),
                        legend="{{version}}",
                    )
                ],
                failure_lines=True,
            )
        )
        .with_panel(
            graph(
                "Failures per second by version",
                "Failed deployments per second by version.",
                "ops",
                [query(f"sum by (version) ({deployments(FAILED + OS_VERSION)})", legend="{{version}}")],
            )
        )
        .with_panel(
            graph(
                "Failures per second by OS",
                "Failed deployments per second by OS.",
                "ops",
                [query(f"sum by (os) ({deployments(FAILED + OS_VERSION)})", legend="{{os}}")],
            )
        )
        .with_row(dashboard_builders.Row("Alerts"))
        .with_panel(
            grid(
                "Alerts currently firing",
                "FlakeDrop alerts Prometheus is firing now, with their labels (see docs/runbook.md).",
                instant_table(firing),
                hidden=["Time", "Value", "__name__", "alertstate"],
            )
        )
    )


def exporter() -> dashboard_builders.Dashboard:
    """Return the Exporter health board: ingest, rejects, latency, store and scrape health."""
    job = 'job=~"$job"'
    events_route = f'{job},route="/v1/events"'

    def latency(quantile: str) -> str:
        return (
            f"histogram_quantile({quantile}, sum by (le, route) "
            f"(rate(flakedrop_http_request_duration_seconds_bucket{{{job}}}[$__rate_interval])))"
        )

    return (
        board(
            "flakedrop-exporter",
            "FlakeDrop / Exporter health",
            "Is the telemetry server taking events, how fast, and what does it drop?",
            time_from="now-6h",
        )
        .variables(
            [
                datasource_variable(),
                label_variable("job", "Job", "label_values(flakedrop_build_info, job)", all_value=None),
            ]
        )
        .with_row(dashboard_builders.Row("Health"))
        .with_panel(
            single(
                "Replicas up",
                "Exporter targets Prometheus scrapes successfully (up == 1).",
                "none",
                [query(f"sum(up{{{job}}})", instant=True)],
                width=6,
            )
        )
        .with_panel(
            single(
                "Store ready",
                "Replicas whose store is reachable (flakedrop_store_ready == 1).",
                "none",
                [query(f"sum(flakedrop_store_ready{{{job}}})", instant=True)],
                width=6,
            )
        )
        .with_panel(
            grid(
                "Build info",
                "Server version and Python version of each replica.",
                instant_table(f"flakedrop_build_info{{{job}}}"),
                hidden=["Time", "Value", "__name__"],
                width=12,
            )
        )
        .with_row(dashboard_builders.Row("Ingest"))
        .with_panel(
            graph(
                "Ingest requests per second by code",
                "POST /v1/events requests per second by HTTP status code, all replicas.",
                "reqps",
                [
                    query(
                        "sum by (code) "
                        f"(rate(flakedrop_http_requests_total{{{events_route}}}[$__rate_interval]))",
                        legend="{{code}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Accepted events per second by type",
                "Events counted by the store per second (the same on every replica).",
                "ops",
                [
                    query(
                        f"sum by (type) ({store_counter('flakedrop_events_total', job)})",
                        legend="{{type}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Rejected events per second by reason",
                "Events and requests refused, by reason (see the fixed reason list in the metrics contract).",
                "ops",
                [
                    query(
                        f"sum by (reason) (rate(flakedrop_events_rejected_total{{{job}}}[$__rate_interval]))",
                        legend="{{reason}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Duplicates and label overflow per second",
                "Events acknowledged but not counted again (dedup), "
                "and label values folded into 'other' by a cap.",
                "ops",
                [
                    query(
                        f"sum(rate(flakedrop_events_duplicate_total{{{job}}}[$__rate_interval]))",
                        ref_id="A",
                        legend="duplicates",
                    ),
                    query(
                        f"sum by (label) (rate(flakedrop_label_overflow_total{{{job}}}[$__rate_interval]))",
                        ref_id="B",
                        legend="overflow {{label}}",
                    ),
                ],
            )
        )
        .with_row(dashboard_builders.Row("Latency and store"))
        .with_panel(
            graph(
                "Request latency by route",
                "p50 and p99 of request duration per route, all replicas.",
                "s",
                [
                    query(latency("0.5"), ref_id="A", legend="p50 {{route}}"),
                    query(latency("0.99"), ref_id="B", legend="p99 {{route}}"),
                ],
            )
        )
        .with_panel(
            graph(
                "Store commits",
                "p99 time per group commit, and store errors per second by operation (ingest answered 503).",
                "s",
                [
                    query(
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(flakedrop_store_commit_duration_seconds_bucket{{{job}}}[$__rate_interval])))",
                        ref_id="A",
                        legend="commit p99",
                    ),
                    query(
                        f"sum by (op) (rate(flakedrop_store_errors_total{{{job}}}[$__rate_interval]))",
                        ref_id="B",
                        legend="errors/s {{op}}",
                    ),
                ],
            )
        )
        .with_row(dashboard_builders.Row("Scrapes"))
        .with_panel(
            graph(
                "Targets up",
                "1 when Prometheus scraped the replica successfully.",
                "none",
                [query(f"up{{{job}}}", legend="{{instance}}")],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Scrape duration",
                "How long Prometheus takes to scrape /metrics of each replica.",
                "s",
                [query(f"scrape_duration_seconds{{{job}}}", legend="{{instance}}")],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Samples scraped",
                "Samples in each scrape; a steady rise means growing label cardinality.",
                "short",
                [query(f"scrape_samples_scraped{{{job}}}", legend="{{instance}}")],
                width=8,
            )
        )
    )


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
