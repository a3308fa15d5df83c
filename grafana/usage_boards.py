"""The usage boards: Overview (who uses FlakeDrop, how much, do they stay) and Releases."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_models
from panels import (
    OS_VERSION,
    bars,
    board,
    datasource_variable,
    dedup,
    deployments,
    failure_ratio,
    graph,
    os_version_variables,
    pie,
    query,
    ratio_thresholds,
    single,
    steps,
    store_counter,
)

from exporter import contract


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
