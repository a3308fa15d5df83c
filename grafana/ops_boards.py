"""The operations boards: Reliability (failure ratios against the alert thresholds) and Exporter health."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from panels import (
    CRITICAL,
    FAILED,
    LOWER_BOUND,
    OS_VERSION,
    WARNING,
    board,
    datasource_variable,
    dedup,
    failure_ratio,
    graph,
    grid,
    in_bucket,
    instant_table,
    label_variable,
    os_version_variables,
    per_bucket,
    query,
    ratio_thresholds,
    single,
    steps,
    store_counter,
)

from exporter import contract


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
            per_bucket(
                "Failed deployments per hour by version",
                f"Failed deployments reported in each hour by version; {LOWER_BOUND}.",
                [
                    query(
                        f"sum by (version) ({in_bucket('flakedrop_deployments_total', FAILED + OS_VERSION)})",
                        legend="{{version}}",
                    )
                ],
            )
        )
        .with_panel(
            per_bucket(
                "Failed deployments per hour by OS",
                f"Failed deployments reported in each hour by OS; {LOWER_BOUND}.",
                [
                    query(
                        f"sum by (os) ({in_bucket('flakedrop_deployments_total', FAILED + OS_VERSION)})",
                        legend="{{os}}",
                    )
                ],
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
