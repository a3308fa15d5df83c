"""The panel, query and board builders every FlakeDrop dashboard is made of (grafana-foundation-sdk)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The SDK's classic Dashboard builder warns (DeprecationWarning) that dashboardv2 supersedes it;
# Grafana's file provisioning loads the classic JSON model, so that is the one we emit.
from grafana_foundation_sdk.builders import bargauge, piechart, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import piechart as piechart_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

from exporter import contract

DATASOURCE_UID = "flakedrop-prometheus"
DATASOURCE_VARIABLE = "${datasource}"
TAG = "flakedrop"

# Filters for families that carry os and version labels (flakedrop_users, _deployments_total, ...).
OS_VERSION = 'os=~"$os",version=~"$version"'
FAILED = 'outcome="failure",'
# The alert thresholds of docs/metrics-contract.md, drawn on the Reliability panels, as the rules use them.
WARNING = f"{contract.FAILURE_RATIO_WARNING:.2f}"
CRITICAL = f"{contract.FAILURE_RATIO_CRITICAL:.2f}"

# Bars of counts per bucket: each bar is increase() over $__interval, never shorter than the bucket, and
# with this many bars at most Grafana keeps hourly buckets up to a 90-day range.
MAX_BARS = 24 * 90
LOWER_BOUND = "a lower bound: the client drops some config and deployment events when it exits first"

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


def in_bucket(metric: str, selector: str = "") -> str:
    """Return a store-backed counter's increase within each bar's bucket ($__interval), deduplicated."""
    return store_counter(metric, selector, "$__interval", "increase")


def per_bucket(
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    bucket: str = "1h",
    width: int = 12,
    stacked: bool = False,
) -> timeseries.Panel:
    """Return bars of counts per bucket (at fleet scale, per-second rates read 0.0002)."""
    stacking = common.StackingMode.NORMAL if stacked else None
    panel = graph(title, description, "short", targets, width=width, stacking=stacking)
    return (
        panel.draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(70)
        .interval(bucket)
        .max_data_points(MAX_BARS)
        .min(0)
    )


def cohort_matrix(title: str, description: str, expr: str, unit: str, weeks: int) -> table.Panel:
    """Return a cohort x weeks-since table of an instant query over the cohort gauges, shaded by value."""
    corner = "cohort\\weeks_since"  # the first column groupingToMatrix names after its row and column fields
    matrix = dashboard_models.DataTransformerConfig(
        id_val="groupingToMatrix",
        options={
            "columnField": "weeks_since",
            "rowField": "cohort",
            "valueField": "Value",
            "emptyValue": "empty",
        },
    )
    order = dashboard_models.DataTransformerConfig(
        id_val="organize",
        options={
            "indexByName": {corner: 0} | {str(k): k + 1 for k in range(weeks)},
            "renameByName": {corner: "Cohort"} | {str(k): f"+{k}w" for k in range(weeks)},
        },
    )
    panel = with_basics(table.Panel(), title, description, unit, 24, 9)
    return (
        panel.with_target(instant_table(expr))
        .with_transformation(matrix)
        .with_transformation(order)
        .cell_options(
            common.TableColoredBackgroundCellOptions(mode=common.TableCellBackgroundDisplayMode.GRADIENT)
        )
        .color_scheme(
            dashboard_builders.FieldColor().mode(dashboard_models.FieldColorModeId.CONTINUOUS_BL_PU)
        )
        .min(0)
    )
