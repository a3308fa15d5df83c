"""The usage boards: Overview (who uses FlakeDrop, how much, do they stay) and Releases."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_models
from panels import (
    LOWER_BOUND,
    OS_VERSION,
    bars,
    board,
    cohort_matrix,
    datasource_variable,
    dedup,
    failure_ratio,
    graph,
    in_bucket,
    os_version_variables,
    per_bucket,
    pie,
    query,
    ratio_thresholds,
    single,
    steps,
    store_counter,
)

from exporter import contract
from exporter.weeks import MAX_WEEKS  # the most weeks --retention-weeks allows: columns in order up to it


def overview() -> dashboard_builders.Dashboard:
    """Return the Overview board: users, activity, deployments and platform mix."""
    users = dedup(f"flakedrop_users{{{OS_VERSION}}}")
    in_range = store_counter("flakedrop_deployments_total", OS_VERSION, "$__range", "increase")
    successes = store_counter(
        "flakedrop_deployments_total", f'outcome="success",{OS_VERSION}', "$__range", "increase"
    )
    configs = store_counter("flakedrop_configs_created_total", OS_VERSION, "$__range", "increase")
    all_users = f"sum({dedup('flakedrop_users')})"
    active_1d = "sum(" + dedup('flakedrop_active_users{window="1d"}') + ")"
    active_30d = "sum(" + dedup('flakedrop_active_users{window="30d"}') + ")"
    retained = dedup("flakedrop_cohort_retained_users")
    return (
        board(
            "flakedrop-overview",
            "FlakeDrop / Overview",
            "Who uses FlakeDrop, how much, whether they stay, and on what.",
        )
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
                "Share of all users who ran at least one real deployment, and share who created a config "
                f"({LOWER_BOUND}).",
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
                "Share of all users whose last seen version is the latest release. When every client reports "
                "the same version (the shipped v1.3.x builds all send v1.3.0), this reads 0% or 100% and says "
                "nothing about upgrades.",
                "percentunit",
                [query(f"sum({dedup('flakedrop_users_on_latest')}) / {all_users}", instant=True)],
            )
        )
        .with_row(dashboard_builders.Row("Deployments"))
        .with_panel(
            single(
                "Deployments in range",
                f"Real (non-dry-run) deployments reported in the selected time range; {LOWER_BOUND}.",
                "short",
                [query(f"sum({in_range})", instant=True)],
                width=8,
            )
        )
        .with_panel(
            single(
                "Deployment success rate",
                "Successful / all deployments reported in the selected time range.",
                "percentunit",
                [query(f"sum({successes})\n/\nsum({in_range})", instant=True)],
                width=8,
            )
        )
        .with_panel(
            single(
                "Configs created",
                f"Setups (config_created events) in the selected time range; {LOWER_BOUND}.",
                "short",
                [query(f"sum({configs})", instant=True)],
                width=8,
            )
        )
        .with_panel(
            per_bucket(
                "Deployments per hour by outcome",
                f"Deployments reported in each hour, success and failure stacked; {LOWER_BOUND}.",
                [
                    query(
                        f"sum by (outcome) ({in_bucket('flakedrop_deployments_total', OS_VERSION)})",
                        legend="{{outcome}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            per_bucket(
                "Configs created per hour",
                f"config_created events in each hour; {LOWER_BOUND}.",
                [query(f"sum({in_bucket('flakedrop_configs_created_total', OS_VERSION)})", legend="configs")],
            )
        )
        .with_row(dashboard_builders.Row("CLI runs"))
        .with_panel(
            single(
                "CLI runs per active user per day",
                "CLI runs (one heartbeat per run) in the last day, divided by the users active in the last day "
                "(all OSes and versions: active users have no such labels). The page and /stats show the same "
                "figure for the current UTC day.",
                "short",
                [query(f"sum({in_bucket('flakedrop_heartbeats_total')})\n/\n{active_1d}", instant=True)],
                width=6,
            ).interval("1d")
        )
        .with_panel(
            single(
                "Stickiness",
                "Users active in the last day / users active in the last 30 days: the share of the month's "
                "users who use FlakeDrop on a given day.",
                "percentunit",
                [query(f"{active_1d}\n/\n{active_30d}", instant=True)],
                width=6,
            )
        )
        .with_panel(
            per_bucket(
                "CLI runs per hour",
                "CLI runs in each hour: the client sends one heartbeat per run, not one per day.",
                [query(f"sum({in_bucket('flakedrop_heartbeats_total', OS_VERSION)})", legend="CLI runs")],
            )
        )
        .with_panel(
            per_bucket(
                "Events per hour by type",
                "Accepted events in each hour by type (all OSes and versions); a heartbeat is one CLI run.",
                [query(f"sum by (type) ({in_bucket('flakedrop_events_total')})", legend="{{type}}")],
                width=24,
            ).with_transformation(
                dashboard_models.DataTransformerConfig(
                    id_val="renameByRegex",
                    options={"regex": "^heartbeat$", "renamePattern": "heartbeat (CLI runs)"},
                )
            )
        )
        .with_row(dashboard_builders.Row("Retention"))
        .with_panel(
            cohort_matrix(
                "Weekly cohort retention",
                "Of the users first seen in each ISO week (server time, UTC), the share with an accepted event "
                "in each later week (+0w is the cohort itself, 100%). Columns start when a week has begun.",
                f"{retained}\n/ on (cohort) group_left\n{dedup('flakedrop_cohort_users')}",
                "percentunit",
                MAX_WEEKS,
            ).max(1)
        )
        .with_panel(
            cohort_matrix(
                "Weekly cohort retention (users)",
                "The same table as counts: users of each weekly cohort active in each later week; "
                "+0w is the cohort's size.",
                retained,
                "short",
                MAX_WEEKS,
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
