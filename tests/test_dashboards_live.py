"""Issue 4, "live" proof: every dashboard query, run against a real Prometheus scraping the real exporter.

One module-scoped stack (about 30 s): the exporter (`flakedrop-telemetry serve`), a real Prometheus that
scrapes it every second and evaluates the repository's own rule files (a verbatim copy: the Reliability
board reads the recording rules), a priming step, then known traffic from `exporter.simulate`.

Priming: Prometheus' rate()/increase() cannot see the value a counter series has when it first appears
(there is no earlier sample to subtract). So before the load, a few priming users create every series
the load will touch (each with one increment), and the test waits until Prometheus has scraped them.
The load then only increments existing series, as in production, and windowed panels can be checked
against the load itself. Raw counters and gauges are checked exactly (priming + load).

Every panel target of every board is then run at one fixed instant (the latest scrape), as an instant
query (vector) and, for time series panels, as a range query over the last minute (matrix), with three
variable sets: every picker on *All* (its allValue `.+`, `window` at its default), every picker on its
first concrete value as Grafana lists them, and the bad release (version 1.3.0, job flakedrop, 30d).
Grafana's interval variables: `$__rate_interval` = 1m and `$__range` = 5m, both covering all the data.

Tolerances of windowed panels (documented, derived, not guessed): with one sample per second, the only
difference between Prometheus' increase() and the true increase is its extrapolation, at most half a
scrape interval at the start and up to one interval at the end. With S seconds between the baseline
scrape and the query, an increase lies in [true, true * (1 + 2/S)] and a ratio of increases in
[r / (1 + 2/S), r * (1 + 2/S)]. The stack waits until S >= 20 s (so within 10%) and fails loudly if
S grew past the 1m rate window (then the windows would not cover the load any more).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from dashboard_tools import iter_panels, load_dashboards, substitute
from procs import Server, http
from promstack import Prometheus, describe, rule_texts
from support import require_binary

from exporter import clientbytes
from exporter.simulate import plan_traffic, send
from exporter.weeks import week_index, week_label

pytestmark = pytest.mark.slow

SEED = 11
USERS, DAYS = 300, 14
VERSIONS = ("1.1.0", "1.2.0", "1.3.0", "1.3.5")  # exporter.simulate.VERSION_MIX
OSES = ("darwin", "linux", "windows")  # exporter.simulate.OS_MIX
ARCHES = ("amd64", "arm64")
LATEST, LATEST_RELEASE_DATE = "1.3.5", "2026-11-20"
BAD_RELEASE = "1.3.0"
RATE_WINDOW_S, RANGE_S = 60, 300
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1s",
    "__interval_ms": "1000",
    "__range": "5m",
    "__range_s": str(RANGE_S),
    "__range_ms": str(RANGE_S * 1000),
}
MIN_SPAN_S = 20.0  # seconds between the baseline scrape and the query instant (tolerance 2/S = 10%)
MAX_SPAN_S = RATE_WINDOW_S - 5  # the 1m rate windows must still hold the baseline sample
EXTRAPOLATION_S = 2.0  # Prometheus' extrapolation: <= half an interval at the start + one at the end

# Panels whose result may legitimately be empty: the table of firing alerts (the shipped rules have
# `for:` of 2m and more, longer than this test lives, so nothing can fire).
MAY_BE_EMPTY = {("reliability.json", "Alerts currently firing", "A")}


# --------------------------------------------------------------------------------------------------
# What the exporter must count: a model built from the very bytes sent


@dataclass
class Model:
    """Users and counters implied by a list of client request bodies."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (os, version, outcome)
    configs: Counter[str] = field(default_factory=Counter)  # version (os depends on arrival order)
    heartbeats: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (os, version, arch)
    events: Counter[str] = field(default_factory=Counter)  # type

    def add(self, body: bytes) -> None:
        envelope = json.loads(body)
        kind, payload = envelope["type"], envelope["data"]["data"]
        version = payload["version"].removeprefix("v")
        user = self.users.setdefault(
            payload["user_id"], {"os": "unknown", "version": version, "deployed": False, "configured": False}
        )
        assert user["version"] == version, "simulated users keep one version"
        if "os" in payload:
            user["os"] = payload["os"]
        self.events[kind] += 1
        if kind == "deployment":
            user["deployed"] = True
            outcome = "success" if payload["success"] else "failure"
            self.deployments[(payload["os"], version, outcome)] += 1
        elif kind == "config_created":
            user["configured"] = True
            self.configs[version] += 1
        elif kind == "heartbeat":
            self.heartbeats[(payload["os"], version, payload["arch"])] += 1

    def extend(self, bodies: list[bytes]) -> Model:
        for body in bodies:
            self.add(body)
        return self

    def user_count(
        self, os_re: str = ".+", version_re: str = ".+", by: str | None = None
    ) -> dict[str, float]:
        counts: Counter[str] = Counter()
        for user in self.users.values():
            if re.fullmatch(os_re, user["os"]) and re.fullmatch(version_re, user["version"]):
                counts[user[by] if by else ""] += 1
        return dict(counts)

    def deploys(
        self, os_re: str = ".+", version_re: str = ".+", outcome: str | None = None, by: str | None = None
    ) -> dict[str, float]:
        index = {"os": 0, "version": 1, "outcome": 2}
        counts: Counter[str] = Counter()
        for (os_, version, out), n in self.deployments.items():
            if re.fullmatch(os_re, os_) and re.fullmatch(version_re, version) and outcome in (None, out):
                counts[(os_, version, out)[index[by]] if by else ""] += n
        return dict(counts)

    def failure_ratio(
        self, os_re: str = ".+", version_re: str = ".+", by: str | None = None
    ) -> dict[str, float]:
        total = self.deploys(os_re, version_re, by=by)
        failed = self.deploys(os_re, version_re, "failure", by=by)
        return {key: failed.get(key, 0) / n for key, n in total.items() if n}


def _uid(*parts: str) -> str:
    return hashlib.sha256(":".join(("prime", *parts)).encode()).hexdigest()[:32]


def priming_bodies(now_ns: int) -> list[bytes]:
    """One increment for every series the load can touch (deployments, configs, heartbeats, users)."""
    bodies: list[bytes] = []
    clock = iter(range(now_ns, now_ns + 10**9, 1000))  # distinct client timestamps: no dedup
    for version in VERSIONS:
        wire = "v" + version
        for os_ in OSES:
            user = _uid(os_, version)
            bodies += [clientbytes.heartbeat(user, wire, os_, arch, next(clock)) for arch in ARCHES]
            bodies += [clientbytes.deployment(user, wire, os_, ok, 1, next(clock)) for ok in (True, False)]
            bodies.append(clientbytes.config_created(user, wire, next(clock)))  # os: the user's (known)
        bodies.append(clientbytes.config_created(_uid("unknown", version), wire, next(clock)))  # os unknown
    return bodies


# --------------------------------------------------------------------------------------------------
# The stack


@dataclass
class Live:
    prom: Prometheus
    server: Server
    primed: Model
    load: Model
    total: Model
    expected: Any  # exporter.simulate.Expected of the load
    at: float  # the instant every query is evaluated at (the latest scrape)
    span: float  # seconds between the baseline scrape and `at` (lower bound)
    series_after_priming: dict[str, int]
    series_after_load: dict[str, int]
    results: list[dict[str, Any]] = field(default_factory=list)
    variable_values: dict[str, list[str]] = field(default_factory=dict)

    @property
    def eps(self) -> float:
        return EXTRAPOLATION_S / self.span


RECORDED = (
    "flakedrop:deployment_failure_ratio:rate1h",
    "flakedrop:deployment_failure_ratio_by_os:rate1h",
    "flakedrop:deployment_failure_ratio_by_version:rate1h",
)
FAMILIES = (
    "flakedrop_deployments_total",
    "flakedrop_configs_created_total",
    "flakedrop_heartbeats_total",
    "flakedrop_events_total",
    "flakedrop_users",
    "flakedrop_active_users_by_version",
)


def _series_counts(prom: Prometheus) -> dict[str, int]:
    return {name: int(prom.value(f"count({name})") or 0) for name in FAMILIES}


def _store_sum(prom: Prometheus, name: str) -> float:
    return prom.value(f"sum(max without (instance) ({name}))") or 0.0


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    binary = require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("dashboards-live")
    server = Server(
        tmp / "data", "--latest-version", "v" + LATEST, "--latest-release-date", LATEST_RELEASE_DATE
    )
    prom = None
    try:
        prom = Prometheus(
            tmp / "prometheus",
            exporter_targets=[f"127.0.0.1:{server.port}"],
            rules=rule_texts(),  # the shipped rules, verbatim
            binary=binary,
        )
        server.wait_ready()
        bodies = priming_bodies(time.time_ns() - 10**9)
        primed = Model().extend(bodies)
        for body in bodies:
            status, reply, _ = http(
                "POST", server.url + "/v1/events", body, {"Content-Type": "application/json"}
            )
            assert status == 200, reply
        prom.wait_ready()
        prom.wait_rules_loaded(timeout=30)
        # Baseline: Prometheus holds one sample of every primed series before the load starts.
        prom.wait_for(
            lambda: (
                _store_sum(prom, "flakedrop_events_total") == sum(primed.events.values())
                and _store_sum(prom, "flakedrop_users") == len(primed.users)
            ),
            30,
            what="the primed series scraped",
        )
        baseline = time.time()  # >= the baseline sample's timestamp
        series_after_priming = _series_counts(prom)

        events, expected = plan_traffic(USERS, DAYS, seed=SEED)
        load = Model().extend([event.body for event in events])
        statuses = send(server.url, events, progress=False)
        assert statuses == Counter({200: len(events)}), f"the exporter refused some of the load: {statuses}"
        total = Model().extend(bodies + [event.body for event in events])

        prom.wait_for(
            lambda: (
                _store_sum(prom, "flakedrop_users") == len(total.users)
                and _store_sum(prom, "flakedrop_events_total") == sum(total.events.values())
            ),
            30,
            what=f"the load scraped ({len(total.users)} users, {sum(total.events.values())} events)",
        )
        loaded = time.time()
        # The recording rules have been evaluated on the loaded data.
        prom.wait_for(
            lambda: min(prom.value(f"min(timestamp({name}))") or 0 for name in RECORDED) > loaded,
            15,
            what="recording rules evaluated after the load was scraped",
        )
        time.sleep(max(0.0, baseline + MIN_SPAN_S + 1 - time.time()))
        at = prom.value('max(timestamp(up{job="flakedrop"}))')
        assert at is not None
        span = at - baseline
        assert MIN_SPAN_S <= span <= MAX_SPAN_S, (
            f"{span:.1f}s between the baseline scrape and the queries: the machine is too slow for the "
            f"1m rate windows to hold the baseline"
        )
        live = Live(
            prom=prom,
            server=server,
            primed=primed,
            load=load,
            total=total,
            expected=expected,
            at=at,
            span=span,
            series_after_priming=series_after_priming,
            series_after_load=_series_counts(prom),
        )
        run_every_panel_query(live)
        yield live
    except BaseException:
        print(describe(prom, server))
        raise
    finally:
        if prom is not None:
            prom.stop()
        server.stop()


# --------------------------------------------------------------------------------------------------
# Running every panel query


def _label_values_query(query: str) -> tuple[str, str]:
    """('selector', 'label') of a Grafana `label_values(selector, label)` variable query."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
    assert match, f"unsupported variable query {query!r}"
    return match.group(1), match.group(2)


def variable_sets(live: Live, dashboard: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The three variable sets (see the module doc), resolved like Grafana does."""
    sets: dict[str, dict[str, str]] = {"all": {}, "first": {}, "bad-release": {}}
    for variable in dashboard.get("templating", {}).get("list", []):
        name, kind = variable["name"], variable.get("type")
        if kind == "datasource":
            for values in sets.values():
                values[name] = "flakedrop-prometheus"  # not part of any query
            continue
        if kind == "custom":
            options = [option["value"] for option in variable["options"]]
            sets["all"][name] = variable["current"]["value"]
            sets["first"][name] = options[0]
            sets["bad-release"][name] = options[-1]
            continue
        assert kind == "query", f"variable {name}: unsupported type {kind}"
        selector, label = _label_values_query(variable["query"])
        # the dashboards sort these alphabetically (ascending), as Prometheus' API does
        listed = sorted(live.prom.label_values(label, substitute(selector, {**BUILTINS, **sets["first"]})))
        assert listed, f"variable {name}: {variable['query']} lists no value"
        live.variable_values[name] = listed
        if variable.get("includeAll"):
            # All sends the custom allValue, or else (Grafana's default) every listed value as a regex
            every = "(" + "|".join(re.escape(value) for value in listed) + ")"
            sets["all"][name] = variable.get("allValue") or every
        else:
            sets["all"][name] = listed[0]
        sets["first"][name] = listed[0]
        sets["bad-release"][name] = {"version": BAD_RELEASE, "job": "flakedrop"}.get(name, ".+")
    return sets


def is_range_target(panel: dict[str, Any], target: dict[str, Any]) -> bool:
    """Grafana runs a target as a range query unless it is marked instant-only."""
    return not (target.get("instant") and target.get("range") is False)


def panel_interval(panel: dict[str, Any]) -> dict[str, str]:
    """$__interval of a panel with a min interval: the interval itself (the range is shorter than a bar)."""
    return {"__interval": panel["interval"]} if panel.get("interval") else {}


def run_every_panel_query(live: Live) -> None:
    for board, dashboard in load_dashboards().items():
        sets = variable_sets(live, dashboard)
        for combo, values in sets.items():
            for panel in iter_panels(dashboard):
                # Grafana's $__interval is at least the panel's min interval (the bars' bucket, 1h or 1d).
                variables = {**BUILTINS, **values, **panel_interval(panel)}
                for target in panel.get("targets", []):
                    if "expr" not in target:
                        continue
                    expr = substitute(target["expr"], variables)
                    base = {
                        "board": board,
                        "panel": panel.get("title", ""),
                        "type": panel.get("type"),
                        "ref": target.get("refId", ""),
                        "combo": combo,
                        "vars": values,
                        "expr": expr,
                    }
                    live.results.append(
                        {
                            **base,
                            "mode": "instant",
                            "answer": live.prom.api("query", query=expr, time=live.at),
                        }
                    )
                    if is_range_target(panel, target):
                        answer = live.prom.api(
                            "query_range", query=expr, start=live.at - RATE_WINDOW_S, end=live.at, step=1
                        )
                        live.results.append({**base, "mode": "range", "answer": answer})


def where(result: dict[str, Any]) -> str:
    return f"{result['board']} / {result['panel']!r} {result['ref']} [{result['combo']}, {result['mode']}]"


# --------------------------------------------------------------------------------------------------
# Tests


def test_every_panel_query_succeeds_with_data_of_the_right_type(live: Live) -> None:
    problems = []
    targets = set()
    for result in live.results:
        answer = result["answer"]
        targets.add((result["board"], result["panel"], result["ref"]))
        if answer.get("status") != "success":
            problems.append(
                f"{where(result)}: {answer.get('errorType')}: {answer.get('error')}\n  {result['expr']}"
            )
            continue
        data = answer["data"]
        wanted = "matrix" if result["mode"] == "range" else "vector"
        if data["resultType"] not in (wanted, "scalar"):
            problems.append(f"{where(result)}: {data['resultType']}, expected {wanted}")
        elif (
            data["resultType"] == wanted
            and not data["result"]
            and (result["board"], result["panel"], result["ref"]) not in MAY_BE_EMPTY
        ):
            problems.append(f"{where(result)}: empty result\n  {result['expr']}")
    assert not problems, f"{len(problems)} failing panel queries:\n" + "\n".join(problems)
    boards = load_dashboards()
    assert len(targets) == sum(
        1
        for dashboard in boards.values()
        for p in iter_panels(dashboard)
        for t in p.get("targets", [])
        if "expr" in t
    ), "some panel target was not run"
    assert {r["combo"] for r in live.results} == {"all", "first", "bad-release"}
    assert any(r["mode"] == "range" for r in live.results)


def test_shipped_rules_evaluate_on_real_data(live: Live) -> None:
    """Every recording and alerting rule of prometheus/rules evaluates without error on the load."""
    rules = [rule for group in live.prom.rules() for rule in group["rules"]]
    assert rules
    assert [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"] == []
    recorded = {r["name"] for r in rules if r["type"] == "recording"}
    assert set(RECORDED) <= recorded


def test_variables_list_the_loaded_values(live: Live) -> None:
    values = live.variable_values
    assert values["os"] == sorted(["darwin", "linux", "unknown", "windows"]), values["os"]
    assert values["version"] == sorted(VERSIONS)  # version's query is filtered by the first os (darwin)
    assert values["job"] == ["flakedrop"]


def test_store_backed_counters_and_gauges_match_the_traffic_exactly(live: Live) -> None:
    prom, total = live.prom, live.total
    assert live.series_after_load == live.series_after_priming, "the load created a series priming did not"

    def by(expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {
            tuple(dict(key)[label] for label in labels): value
            for key, value in prom.vector(expr, live.at).items()
        }

    deployments = by("max without (instance) (flakedrop_deployments_total)", "os", "version", "outcome")
    assert deployments == {k: float(v) for k, v in total.deployments.items()}
    heartbeats = by("max without (instance) (flakedrop_heartbeats_total)", "os", "version", "arch")
    assert heartbeats == {k: float(v) for k, v in total.heartbeats.items()}
    configs = by("sum by (version) (max without (instance) (flakedrop_configs_created_total))", "version")
    assert configs == {(k,): float(v) for k, v in total.configs.items()}
    events = by("max without (instance) (flakedrop_events_total)", "type")
    assert events == {(k,): float(v) for k, v in total.events.items()}
    users = by("max without (instance) (flakedrop_users)", "os", "version")
    want: Counter[tuple[str, str]] = Counter((u["os"], u["version"]) for u in total.users.values())
    assert users == {k: float(v) for k, v in want.items()}
    assert sum(users.values()) == len(total.users) == USERS + len(live.primed.users)
    # And the simulator's own totals agree with the model of the bytes it sent.
    assert len(live.load.users) == live.expected.users == USERS
    assert live.load.failure_ratio(version_re=re.escape(BAD_RELEASE))[""] == pytest.approx(
        live.expected.failure_ratio(BAD_RELEASE)
    )
    assert live.load.user_count(by="version") == dict(live.expected.users_by_version)


# Expected values of panels: (mode, label the series are keyed by, {label value: value}).
#   exact: gauges and raw values; increase: counts over a window; ratio: ratios of windowed counts.
Expectation = tuple[str, str | None, dict[str, float]]


def expectations(live: Live, board: str, panel: str, ref: str, v: dict[str, str]) -> Expectation | None:
    total, load = live.total, live.load
    os_re, version_re = v.get("os", ".+"), v.get("version", ".+")
    users = len(total.users)
    on_latest = total.user_count(version_re=re.escape(LATEST)).get("", 0)

    def per_bucket(outcome: str | None, by: str) -> dict[str, float]:
        """increase() over one bar's bucket (1h, holding the whole load), for every series the filter keeps."""
        counted = load.deploys(os_re, version_re, outcome, by=by)
        return {key: counted.get(key, 0) for key in load.deploys(os_re, version_re, by=by)}

    runs = sum(
        n
        for (os_, version, _), n in load.heartbeats.items()
        if re.fullmatch(os_re, os_) and re.fullmatch(version_re, version)
    )
    cohort = week_label(week_index(live.at))  # every user was first seen seconds ago: one cohort, week 0

    table: dict[tuple[str, str, str], Callable[[], Expectation | None]] = {
        # Overview
        ("overview.json", "Unique users", "A"): lambda: ("exact", None, total.user_count(os_re, version_re)),
        ("overview.json", "Active users", "A"): lambda: (
            "exact",
            "window",
            {w: users for w in ("1d", "7d", "30d")},
        ),
        ("overview.json", "Active users over time", "A"): lambda: (
            "exact",
            "window",
            {w: users for w in ("1d", "7d", "30d")},
        ),
        ("overview.json", "Activation", "A"): lambda: (
            "exact",
            None,
            {"": sum(u["deployed"] for u in total.users.values()) / users},
        ),
        ("overview.json", "Activation", "B"): lambda: (
            "exact",
            None,
            {"": sum(u["configured"] for u in total.users.values()) / users},
        ),
        ("overview.json", "Users on latest release", "A"): lambda: ("exact", None, {"": on_latest / users}),
        ("overview.json", "Deployments in range", "A"): lambda: (
            "increase",
            None,
            load.deploys(os_re, version_re),
        ),
        ("overview.json", "Deployment success rate", "A"): lambda: (
            "ratio",
            None,
            {"": 1 - load.failure_ratio(os_re, version_re)[""]},
        ),
        # configs' os is the user's last known os when the event arrived: order-dependent under
        # concurrent sending, so only checked when the os picker is on All.
        ("overview.json", "Configs created", "A"): lambda: (
            (
                "increase",
                None,
                {"": sum(n for ver, n in load.configs.items() if re.fullmatch(version_re, ver))},
            )
            if os_re == ".+"
            else None
        ),
        ("overview.json", "Deployments per hour by outcome", "A"): lambda: (
            "increase",
            "outcome",
            per_bucket(None, "outcome"),
        ),
        ("overview.json", "Configs created per hour", "A"): lambda: (
            (
                "increase",
                None,
                {"": sum(n for ver, n in load.configs.items() if re.fullmatch(version_re, ver))},
            )
            if os_re == ".+"
            else None
        ),
        ("overview.json", "CLI runs per hour", "A"): lambda: ("increase", None, {"": runs}),
        # runs over the last day (the load: priming is the baseline) / users active in the last day (all)
        ("overview.json", "CLI runs per active user per day", "A"): lambda: (
            "ratio",
            None,
            {"": sum(load.heartbeats.values()) / users},
        ),
        ("overview.json", "Stickiness", "A"): lambda: ("exact", None, {"": 1.0}),
        ("overview.json", "Events per hour by type", "A"): lambda: ("increase", "type", dict(load.events)),
        ("overview.json", "Weekly cohort retention", "A"): lambda: ("exact", "cohort", {cohort: 1.0}),
        ("overview.json", "Weekly cohort retention (users)", "A"): lambda: (
            "exact",
            "cohort",
            {cohort: users},
        ),
        ("overview.json", "Users by OS", "A"): lambda: (
            "exact",
            "os",
            total.user_count(os_re, version_re, by="os"),
        ),
        ("overview.json", "Users by version", "A"): lambda: (
            "exact",
            "version",
            total.user_count(os_re, version_re, by="version"),
        ),
        # Releases
        ("releases.json", "Latest release", "A"): lambda: ("exact", "version", {LATEST: 1}),
        ("releases.json", "Latest release age", "A"): lambda: (
            "exact",
            None,
            {"": live.at - calendar.timegm(time.strptime(LATEST_RELEASE_DATE, "%Y-%m-%d"))},
        ),
        ("releases.json", "Active users on latest release", "A"): lambda: (
            "exact",
            None,
            {"": on_latest / users},
        ),
        ("releases.json", "Upgrade lag", "A"): lambda: ("exact", None, {"": 1 - on_latest / users}),
        ("releases.json", "Share of active users on latest release", "A"): lambda: (
            "exact",
            None,
            {"": on_latest / users},
        ),
        ("releases.json", "Share of active users on latest release", "B"): lambda: (
            "exact",
            None,
            {"": 1 - on_latest / users},
        ),
        ("releases.json", "Version adoption", "A"): lambda: (
            "exact",
            "version",
            total.user_count(os_re, version_re, by="version"),
        ),
        # every user was seen seconds ago (server time), so is active in every window
        ("releases.json", "Active users by version", "A"): lambda: (
            "exact",
            "version",
            total.user_count(version_re=version_re, by="version"),
        ),
        ("releases.json", "Failure ratio by version", "A"): lambda: (
            "ratio",
            "version",
            load.failure_ratio(os_re, version_re, by="version"),
        ),
        ("releases.json", "Failure ratio by version in range", "A"): lambda: (
            "ratio",
            "version",
            load.failure_ratio(os_re, version_re, by="version"),
        ),
        # Reliability
        ("reliability.json", "Fleet failure ratio (1h)", "A"): lambda: ("ratio", None, load.failure_ratio()),
        ("reliability.json", "Alerts firing", "A"): lambda: ("exact", None, {"": 0}),
        ("reliability.json", "Failed deployments", "A"): lambda: (
            "increase",
            None,
            load.deploys(os_re, version_re, "failure"),
        ),
        ("reliability.json", "Fleet failure ratio", "A"): lambda: ("ratio", None, load.failure_ratio()),
        ("reliability.json", "Fleet failure ratio", "B"): lambda: (
            "ratio",
            None,
            load.failure_ratio(os_re, version_re),
        ),
        ("reliability.json", "Failure ratio by OS (1h)", "A"): lambda: (
            "ratio",
            "os",
            load.failure_ratio(os_re, by="os"),
        ),
        ("reliability.json", "Failure ratio by version (1h)", "A"): lambda: (
            "ratio",
            "version",
            load.failure_ratio(version_re=version_re, by="version"),
        ),
        ("reliability.json", "Failed deployments per hour by version", "A"): lambda: (
            "increase",
            "version",
            per_bucket("failure", "version"),
        ),
        ("reliability.json", "Failed deployments per hour by OS", "A"): lambda: (
            "increase",
            "os",
            per_bucket("failure", "os"),
        ),
        # Exporter health: one exporter target, healthy, nothing rejected
        ("exporter.json", "Replicas up", "A"): lambda: ("exact", None, {"": 1}),
        ("exporter.json", "Store ready", "A"): lambda: ("exact", None, {"": 1}),
        ("exporter.json", "Build info", "A"): lambda: ("exact", "job", {"flakedrop": 1}),
        ("exporter.json", "Targets up", "A"): lambda: ("exact", "job", {"flakedrop": 1}),
        ("exporter.json", "Scrape duration", "A"): lambda: ("keys", "job", {"flakedrop": 0}),
        ("exporter.json", "Samples scraped", "A"): lambda: ("keys", "job", {"flakedrop": 0}),
        ("exporter.json", "Ingest requests per second by code", "A"): lambda: ("keys", "code", {"200": 0}),
        ("exporter.json", "Rejected events per second by reason", "A"): lambda: (
            "exact",
            "reason",
            {r: 0 for r in REJECT_REASONS},
        ),
        ("exporter.json", "Duplicates and label overflow per second", "A"): lambda: ("exact", None, {"": 0}),
        ("exporter.json", "Duplicates and label overflow per second", "B"): lambda: (
            "exact",
            "label",
            {"version": 0, "os": 0, "arch": 0},
        ),
        ("exporter.json", "Store commits", "B"): lambda: ("exact", "op", {"write": 0, "read": 0}),
    }
    make = table.get((board, panel, ref))
    return make() if make else None


REJECT_REASONS = (
    "invalid_json", "unsupported_media_type", "body_too_large", "bad_encoding", "missing_field",
    "invalid_field", "unknown_type", "batch_too_large", "rate_limited", "store_unavailable",
    "headers_too_large", "bad_http",
)  # fmt: skip


def compare(live: Live, result: dict[str, Any], expectation: Expectation) -> str | None:
    """Return a description of the mismatch, or None."""
    mode, label, wanted = expectation
    got = {
        s["metric"].get(label, "") if label else "": float(s["value"][1])
        for s in result["answer"]["data"]["result"]
    }
    if set(got) != set(wanted):
        return f"series {sorted(got)} != expected {sorted(wanted)}"
    if mode == "keys":
        return None
    eps = live.eps
    bad = {}
    for key, want in wanted.items():
        value = got[key]
        if mode == "exact":
            ok = math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-9)
        elif mode == "increase":
            ok = want * (1 - 1e-9) <= value <= want * (1 + eps) + 1e-12
        else:  # ratio
            ok = want / (1 + eps) - 1e-12 <= value <= want * (1 + eps) + 1e-12
        if not ok or math.isnan(value):
            bad[key] = (value, want)
    if bad:
        return f"{mode} mismatch (got, expected) with tolerance {eps:.3f}: {bad}"
    return None


# Exporter health panels that read Prometheus' own per-target series (up, scrape_*): with the Job
# picker on All they must still show only the exporter's targets (the test below).
JOB_SCOPED = ("Replicas up", "Targets up", "Scrape duration", "Samples scraped")


def is_job_all_check(result: dict[str, Any]) -> bool:
    return result["board"] == "exporter.json" and result["combo"] == "all" and result["panel"] in JOB_SCOPED


def value_problems(live: Live, keep: Callable[[dict[str, Any]], bool]) -> tuple[list[str], set[tuple]]:
    """Mismatches between the instant results kept by ``keep`` and the model; and what was checked."""
    problems, checked = [], set()
    for result in live.results:
        if result["mode"] != "instant" or result["answer"].get("status") != "success" or not keep(result):
            continue  # failures are reported by the first test
        expectation = expectations(live, result["board"], result["panel"], result["ref"], result["vars"])
        if expectation is None:
            continue
        checked.add((result["board"], result["panel"], result["ref"], result["combo"]))
        mismatch = compare(live, result, expectation)
        if mismatch:
            problems.append(f"{where(result)}: {mismatch}\n  {result['expr']}")
    return problems, checked


def test_panel_values_match_the_known_load(live: Live) -> None:
    problems, checked = value_problems(live, lambda result: not is_job_all_check(result))
    assert not problems, f"{len(problems)} panels disagree with the load (S={live.span:.1f}s):\n" + "\n".join(
        problems
    )
    assert len(checked) >= 100, f"only {len(checked)} panel values were checked"


def test_bad_release_failure_ratio_matches_the_simulation(live: Live) -> None:
    """The Releases and Reliability boards show v1.3.0's failure ratio as exporter.simulate planned it."""
    want = live.expected.failure_ratio(BAD_RELEASE)
    eps = live.eps
    seen = {}
    for result in live.results:
        if result["mode"] != "instant" or result["combo"] != "bad-release":
            continue
        if result["panel"] in (
            "Failure ratio by version",
            "Failure ratio by version in range",
            "Failure ratio by version (1h)",
        ):
            (series,) = result["answer"]["data"]["result"]
            assert series["metric"]["version"] == BAD_RELEASE
            seen[result["panel"]] = float(series["value"][1])
    assert len(seen) == 3, seen
    for panel, value in seen.items():
        assert want / (1 + eps) <= value <= want * (1 + eps), (
            f"{panel}: {value} vs planned {want} (±{eps:.3f})"
        )
    fleet = live.expected.failure_ratio()
    assert want > 2 * fleet * 0.9, "the simulated bad release should stand out against the fleet"


def test_exporter_board_on_all_jobs_shows_only_exporter_targets(live: Live) -> None:
    problems, checked = value_problems(live, is_job_all_check)
    assert len(checked) == len(JOB_SCOPED)
    assert not problems, "\n".join(problems)
