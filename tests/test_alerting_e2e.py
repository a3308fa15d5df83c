"""Issue 3, end to end: client bytes -> exporter -> Prometheus rules -> Alertmanager -> webhook.

Real processes on loopback (about 40 s): the exporter, a real Prometheus (scrape and evaluation every
1 s) loading a fast copy of the repository's rule files (`rules_transform.fast_rules`: only `for:`
becomes 5s and the windows shrink, 1h -> 2m, 5m -> 30s, 1d -> 5m, ...), and a real Alertmanager whose
config is the repository's `prometheus/alertmanager.yml` with its webhook URLs pointed at a loopback
receiver run by this test and group_wait/group_interval 1s (routing and inhibition unchanged).

1. Priming: one success and one failure per version create the deployment series. Prometheus' rate()
   cannot see a series' first value, so these never count; the phases below only increment series that
   already exist, as in production.
2. Normal traffic, 2% failures on both versions (the same deterministic pattern, interleaved), posted one
   event at a time with the client's exact bytes. Once the rules see its failures and the volume guards
   are passed (so silence is meaningful: with `for: 5s`, a threshold too low would fire within the quiet
   period), for 8 s no deployment-failure alert may fire in Prometheus (checked on
   /api/v1/alerts while it runs, and on every evaluation via the ALERTS series afterwards) and none may
   reach the webhook.
3. A failure spike: 60% failures on 1.3.0 (three times the volume of 1.3.5, which stays at 2%). The
   fleet ratio crosses 25%, so FlakeDropFailureRatioHigh (critical) must reach the pager receiver and
   FlakeDropReleaseRegression{version="1.3.0"} (warning) the team receiver, with their labels and
   annotations, and Alertmanager must mute the warning tier of FlakeDropFailureRatioHigh.

Alerts deliberately NOT asserted about (they are not about failing deployments, and the shrunk setup
can legitimately fire them): FlakeDropNoTelemetry (a fresh store has accepted nothing yet during
startup, and "nothing for 3h" becomes "nothing for 3m" with `for: 5s`), FlakeDropExporterDown
(`absent(up{job="flakedrop"})` holds until the first scrape, which Prometheus 2.42 takes ~6 s to do),
FlakeDropRejectsHigh, FlakeDropStoreNotReady and FlakeDropLabelOverflow.
"""

from __future__ import annotations

import calendar
import hashlib
import http.client
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from procs import Server
from promstack import Alertmanager, Prometheus, WebhookReceiver, alertmanager_config, describe, rule_texts
from rules_transform import fast_rules
from support import require_binary

from exporter import clientbytes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK_URL_PREFIX = "https://github.com/flakedrop/flakedrop-telemetry/blob/main/docs/runbook.md#"
GOOD, BAD = "1.3.5", "1.3.0"
FAILURE_ALERTS = ("FlakeDropFailureRatioHigh", "FlakeDropReleaseRegression", "FlakeDropFailureSpike")
FAILURE_ALERTS_RE = "|".join(FAILURE_ALERTS)
TICK_S = 0.1
# deployments per tick and failure pattern (failure when index % period in failing) per version
NORMAL = {GOOD: (1, 50, {49}), BAD: (1, 50, {49})}  # 20/s, 2% each, failures at the end of each 50
SPIKE = {GOOD: (2, 50, {49}), BAD: (6, 5, {0, 2, 4})}  # 80/s, 1.3.0 at 60%, 1.3.5 still at 2%
QUIET_S = 8.0  # how long the normal phase must stay quiet once the rules see it
ALERT_TIMEOUT_S = 45.0


class Traffic:
    """Posts `deployment` events with the client's exact bytes from a background thread, per tick."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.plan = NORMAL
        self.sent: Counter[tuple[str, str]] = Counter()  # (version, outcome) acknowledged with 200
        self.errors: list[str] = []
        self._index: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._users = {
            v: [hashlib.sha256(f"e2e:{v}:{i}".encode()).hexdigest()[:32] for i in range(10)]
            for v in (GOOD, BAD)
        }
        self._conn: http.client.HTTPConnection | None = None
        self._seq = 0

    def post(self, version: str, success: bool) -> None:
        """Send one deployment like the shipped client does (keep-alive, one event per request)."""
        self._seq += 1
        n = self._seq
        user = self._users[version][n % 10]
        # distinct client timestamps, so the server's dedup never merges two of these events
        body = clientbytes.deployment(user, "v" + version, "linux", success, 1 + n % 40, time.time_ns() + n)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": clientbytes.USER_AGENT.format(version="v" + version),
        }
        error = "not sent"
        for _attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self._conn.request("POST", "/v1/events", body=body, headers=headers)
                response = self._conn.getresponse()
                reply = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._conn.close()
                self._conn = None
                error = repr(exc)
                continue
            if response.status != 200:
                error = f"{response.status} {reply[:200]!r}"
                break
            with self._lock:
                self.sent[(version, "success" if success else "failure")] += 1
            return
        self.errors.append(error)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            plan = self.plan
            # interleave the versions so their cumulative counts never drift apart
            for slot in range(max(n for n, _, _ in plan.values())):
                for version, (per_tick, period, failing) in plan.items():
                    if slot < per_tick:
                        index = self._index[version]
                        self._index[version] += 1
                        self.post(version, success=index % period not in failing)
            next_tick += TICK_S
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._conn is not None:
            self._conn.close()

    def ratio(self, version: str | None = None) -> float:
        with self._lock:
            items = [(k, n) for k, n in self.sent.items() if version in (None, k[0])]
        total = sum(n for _, n in items)
        return sum(n for (_, outcome), n in items if outcome == "failure") / total if total else 0.0


@dataclass
class Stack:
    server: Server
    prom: Prometheus
    am: Alertmanager
    webhook: WebhookReceiver

    def describe(self) -> str:
        return describe(self.prom, self.am, self.server, self.webhook)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    prometheus_bin = require_binary("prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager", "alertmanager")
    started: list[Any] = []
    webhook = WebhookReceiver()
    try:
        am = Alertmanager(
            tmp_path / "alertmanager", alertmanager_config(webhook.url), binary=alertmanager_bin
        )
        started.append(am)
        server = Server(tmp_path / "data")
        started.append(server)
        prom = Prometheus(
            tmp_path / "prometheus",
            exporter_targets=[f"127.0.0.1:{server.port}"],
            rules=rule_texts(fast_rules),
            alertmanager_address=am.address,
            binary=prometheus_bin,
        )
        started.append(prom)
        server.wait_ready()
        am.wait_ready()
        prom.wait_ready()
        stack = Stack(server=server, prom=prom, am=am, webhook=webhook)
    except BaseException:
        print(describe(*started, webhook))
        for part in reversed(started):
            part.stop()
        webhook.stop()
        raise
    try:
        yield stack
    finally:
        for part in (prom, am, server):
            part.stop()
        webhook.stop()


def firing(alerts: list[dict[str, Any]], names: tuple[str, ...] = FAILURE_ALERTS) -> list[dict[str, Any]]:
    """The firing alerts among Prometheus' or the webhook's alerts whose name is in names."""
    return [
        a
        for a in alerts
        if a["labels"].get("alertname") in names and a.get("state", a.get("status")) == "firing"
    ]


def brief(alerts: list[dict[str, Any]]) -> list[str]:
    return sorted(
        "{}{{{}}}".format(
            a["labels"].get("alertname"),
            ",".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k != "alertname"),
        )
        for a in alerts
    )


def test_failure_spike_reaches_the_webhook_and_normal_traffic_does_not(stack: Stack) -> None:
    started = time.monotonic()
    prom, webhook = stack.prom, stack.webhook
    traffic = Traffic(stack.server.port)
    try:
        _run_scenario(stack, traffic)
    except BaseException:
        print(f"sent: {dict(traffic.sent)}; send errors: {traffic.errors[:5]}")
        print(f"prometheus alerts: {brief(_safe(prom.alerts))}")
        print(f"alertmanager alerts: {[(brief([a]), a['status']) for a in _safe(stack.am.alerts)]}")
        print(stack.describe())
        raise
    finally:
        traffic.stop()
    assert not traffic.errors, traffic.errors[:5]
    assert time.monotonic() - started < 80, "the end-to-end scenario took too long"
    assert webhook.notifications()


def _safe(call: Any) -> list[dict[str, Any]]:
    try:
        return call()
    except Exception as exc:
        return [{"labels": {"alertname": f"<unavailable: {exc}>"}, "status": {}}]


def _run_scenario(stack: Stack, traffic: Traffic) -> None:
    prom, am, webhook = stack.prom, stack.am, stack.webhook
    prom.wait_rules_loaded(timeout=30)
    windows = {rule["query"] for group in prom.rules() for rule in group["rules"]}
    assert not any("[1h]" in query for query in windows), "Prometheus did not load the fast rules"

    # 1. Priming: every deployment series exists (value 1) before anything is measured.
    for version in (GOOD, BAD):
        traffic.post(version, success=True)
        traffic.post(version, success=False)
    prom.wait_for(
        lambda: prom.value("count(flakedrop_deployments_total)") == 4,
        30,
        what="the primed deployment series scraped",
    )
    traffic.sent.clear()  # the phases' ratios below are about what follows

    # 2. Normal traffic.
    traffic.start()
    volume = 'sum(max without (instance) (increase(flakedrop_deployments_total{job="flakedrop"}[2m])))'
    # The quiet period starts once the rules see normal failures (the first come after 50 deployments
    # per version) and the volume guards are passed: a threshold too low would then fire within it.
    by_version = "flakedrop:deployment_failure_ratio_by_version:rate1h > 0"
    prom.wait_for(
        lambda: (prom.value(volume) or 0) >= 40 and len(prom.vector(by_version)) == 2,
        30,
        what="the rules see the normal traffic's failures past the volume guards (>= 20, >= 10 per version)",
    )
    quiet_start = time.time()
    seen_pending: set[str] = set()
    while time.time() - quiet_start < QUIET_S:
        alerts = prom.alerts()
        seen_pending.update(brief([a for a in alerts if a["labels"]["alertname"] in FAILURE_ALERTS]))
        assert not firing(alerts), f"failure alert firing on 2% failures: {brief(firing(alerts))}"
        assert not firing(webhook.alerts()), (
            f"failure alert delivered on 2% failures: {brief(firing(webhook.alerts()))}"
        )
        time.sleep(0.5)
    quiet_end = time.time()
    # Every evaluation of the quiet period, not only the polled instants: ALERTS has one sample per
    # evaluation of a pending or firing alert.
    span = f"{int(quiet_end - quiet_start) + 1}s"
    fired = prom.vector(
        f'max_over_time(ALERTS{{alertstate="firing",alertname=~"{FAILURE_ALERTS_RE}"}}[{span}])', at=quiet_end
    )
    assert not fired, f"failure alerts fired during the normal phase: {fired}"
    fleet = prom.vector(f"max_over_time(flakedrop:deployment_failure_ratio:rate1h[{span}])", at=quiet_end)
    assert fleet and max(fleet.values()) < 0.05, f"the normal phase is not 'normal' for the rules: {fleet}"
    assert traffic.ratio() == pytest.approx(0.02, abs=0.01), traffic.sent
    if seen_pending:
        print(f"transiently pending during the normal phase (never firing): {sorted(seen_pending)}")

    # 3. The spike.
    traffic.plan = SPIKE
    spike_start = time.time()

    def delivered() -> dict[str, dict[str, Any]] | None:
        got = {}
        for alert in firing(webhook.alerts()):
            labels = alert["labels"]
            if labels["alertname"] == "FlakeDropReleaseRegression" and labels.get("version") == BAD:
                got["regression"] = alert
            if labels["alertname"] == "FlakeDropFailureRatioHigh" and labels.get("severity") == "critical":
                got["critical"] = alert
        return got if len(got) == 2 else None

    got = prom.wait_for(
        delivered, ALERT_TIMEOUT_S, what="the failure alerts delivered to the webhook", interval=0.25
    )
    print(f"alerts delivered {time.time() - spike_start:.1f}s after the spike started")

    regression, critical = got["regression"], got["critical"]
    for alert, severity, receiver, anchor in (
        (regression, "warning", "team", "flakedropreleaseregression"),
        (critical, "critical", "pager", "flakedropfailureratiohigh"),
    ):
        labels, annotations = alert["labels"], alert["annotations"]
        assert labels["severity"] == severity, labels
        assert labels["job"] == "flakedrop", labels
        assert alert["receiver"] == receiver, (alert["receiver"], labels)
        assert alert["path"] == "/alerts", "the webhook path of prometheus/alertmanager.yml"
        assert annotations.get("summary"), annotations
        assert annotations.get("description"), annotations
        assert annotations.get("runbook_url") == RUNBOOK_URL_PREFIX + anchor, annotations
        assert f"\n## {labels['alertname']}\n" in (ROOT / "docs" / "runbook.md").read_text(), (
            "runbook section"
        )
        assert "{{" not in annotations["summary"] + annotations["description"], "unexpanded template"
    assert regression["labels"]["version"] == BAD
    assert BAD in regression["annotations"]["summary"], regression["annotations"]
    assert "%" in critical["annotations"]["description"], critical["annotations"]  # humanizePercentage
    # The good release is never blamed, and Prometheus agrees with what was delivered.
    assert not [a for a in firing(webhook.alerts()) if a["labels"].get("version") == GOOD]
    now_firing = brief(firing(prom.alerts()))
    assert any(n.startswith("FlakeDropReleaseRegression{") and f"version={BAD}" in n for n in now_firing), (
        now_firing
    )
    assert any(n.startswith("FlakeDropFailureRatioHigh{") and "severity=critical" in n for n in now_firing), (
        now_firing
    )
    assert traffic.ratio(BAD) > 0.3 and traffic.ratio(GOOD) < 0.03, traffic.sent

    # Inhibition: while the critical tier fires, Alertmanager mutes the warning tier of the same alert.
    def warning_muted() -> bool:
        for alert in am.alerts():
            labels = alert["labels"]
            if labels.get("alertname") == "FlakeDropFailureRatioHigh" and labels.get("severity") == "warning":
                return alert["status"]["state"] == "suppressed" and bool(alert["status"]["inhibitedBy"])
        return False

    prom.wait_for(warning_muted, 15, what="FlakeDropFailureRatioHigh warning inhibited by the critical one")
    late_warnings = [
        a
        for a in firing(webhook.alerts(), ("FlakeDropFailureRatioHigh",))
        if a["labels"]["severity"] == "warning" and a["received_at"] > critical["received_at"] + 3
    ]
    assert not late_warnings, "the warning tier kept being delivered while the critical one fired"
    # Nothing delivered for the normal phase: every delivered failure alert started during the spike.
    early = [a for a in firing(webhook.alerts()) if _ts(a["startsAt"]) < spike_start - 1]
    assert not early, f"delivered failure alerts that started before the spike: {brief(early)}"


def _ts(rfc3339: str) -> float:
    """Unix seconds of an RFC 3339 time as Alertmanager writes it (up to nanoseconds, Z or an offset)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", rfc3339)
    assert match, rfc3339
    seconds = calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))
    if match.group(3) != "Z":
        sign = 1 if match.group(3)[0] == "+" else -1
        seconds -= sign * (int(match.group(3)[1:3]) * 3600 + int(match.group(3)[4:6]) * 60)
    return seconds + float(match.group(2) or 0)
