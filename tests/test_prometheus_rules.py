"""Prometheus/Alertmanager configuration, rules and rule unit tests.

Uses the real promtool, amtool and alertmanager binaries (Debian packages
`prometheus` and `prometheus-alertmanager`): a missing binary skips the test
on a laptop and fails it under CI (see support.require_binary).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from rules_transform import DEFAULT_WINDOWS, fast_rules
from support import require_binary

ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = ROOT / "prometheus"
RULES_DIR = PROM_DIR / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
UNIT_TEST_FILES = sorted((PROM_DIR / "tests").glob("*.yml"))
PROMETHEUS_YML = PROM_DIR / "prometheus.yml"
ALERTMANAGER_YML = PROM_DIR / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
CONTRACT = ROOT / "docs" / "metrics-contract.md"
RUNBOOK_URL_PREFIX = "https://github.com/flakedrop/flakedrop-telemetry/blob/main/docs/runbook.md#"
SEVERITIES = {"critical", "warning", "info"}


def run(*cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def load_rules() -> list[dict]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def alert_rules() -> list[dict]:
    return [r for r in load_rules() if "alert" in r]


def recording_rules() -> list[dict]:
    return [r for r in load_rules() if "record" in r]


def github_anchor(heading: str) -> str:
    """The anchor GitHub generates for a Markdown heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    anchors = set()
    in_fence = False
    for line in RUNBOOK.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            anchors.add(github_anchor(m.group(1)))
    return anchors


def uncomment_snippets(text: str, anchors: tuple[str, ...]) -> str:
    """Uncomment each documented commented-out YAML block that starts with one of ``anchors``.

    A block is the anchor comment line plus the following comment lines at
    the same column whose content is YAML (indented, a list item or `key:`).
    """
    out = []
    column = None
    for line in text.splitlines():
        stripped = line.lstrip()
        col = len(line) - len(stripped)
        if column is not None:
            if col == column and re.match(r"^# ( |-|[a-z_]+:)", stripped):
                out.append(" " * col + stripped[2:])
                continue
            column = None
        if stripped.startswith(anchors):
            column = col
            out.append(" " * col + stripped[2:])
            continue
        out.append(line)
    return "\n".join(out) + "\n"


# --- files exist -----------------------------------------------------------


def test_expected_files_exist():
    assert PROMETHEUS_YML.is_file()
    assert ALERTMANAGER_YML.is_file()
    assert RULE_FILES, "no prometheus/rules/*.yml"
    assert UNIT_TEST_FILES, "no prometheus/tests/*.yml"
    assert RUNBOOK.is_file()


# --- promtool: config and rules --------------------------------------------


def prometheus_config_copy(tmp_path: Path) -> Path:
    """prometheus.yml with rule_files pointing at the repository's rules.

    promtool checks that rule files and credential files exist, so the
    container paths (/etc/prometheus/..., the compose secret) are rewritten to
    the repository / a dummy token file.
    """
    text = PROMETHEUS_YML.read_text()
    assert "/etc/prometheus/rules/*.yml" in text
    text = text.replace("/etc/prometheus/rules/*.yml", f"{RULES_DIR}/*.yml")
    token = tmp_path / "read_token"
    token.write_text("dummy-read-token\n")
    text = text.replace("/run/secrets/read_token", str(token))
    config = yaml.safe_load(text)
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "flakedrop")
    assert job["authorization"] == {"type": "Bearer", "credentials_file": str(token)}
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    return path


def test_promtool_check_config(tmp_path):
    promtool = require_binary("promtool")
    config = prometheus_config_copy(tmp_path)
    proc = run(promtool, "check", "config", config)
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in proc.stdout + proc.stderr


def test_prometheus_config_contents():
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) >= {"prometheus", "flakedrop"}
    # Every exporter behind the compose DNS name `exporter` (one, or each replica) is its own target.
    assert "static_configs" not in jobs["flakedrop"]
    assert jobs["flakedrop"]["dns_sd_configs"] == [
        {"names": ["exporter"], "type": "A", "port": 8080, "refresh_interval": "15s"}
    ]
    # The stack always sets a read token: Prometheus sends the compose secret `make env` writes.
    token = {"type": "Bearer", "credentials_file": "/run/secrets/read_token"}
    assert jobs["flakedrop"]["authorization"] == token


def test_promtool_check_rules():
    promtool = require_binary("promtool")
    proc = run(promtool, "check", "rules", *RULE_FILES)
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize("test_file", UNIT_TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(test_file):
    promtool = require_binary("promtool")
    proc = run(promtool, "test", "rules", test_file, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


# --- rule conventions --------------------------------------------------------


def test_alert_conventions():
    alerts = alert_rules()
    assert alerts
    for rule in alerts:
        name = rule["alert"]
        assert re.fullmatch(r"FlakeDrop(?:[A-Z][a-z0-9]*)+", name), f"{name}: CamelCase with FlakeDrop prefix"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name}: missing annotation {key}"
        assert "{{" in annotations["description"], f"{name}: description should render a value or label"
        assert annotations["runbook_url"].startswith(RUNBOOK_URL_PREFIX), name


def test_required_alerts_exist():
    by_name: dict[str, set[str]] = {}
    for rule in alert_rules():
        by_name.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
    assert by_name["FlakeDropFailureRatioHigh"] == {"warning", "critical"}
    for name in (
        "FlakeDropReleaseRegression",
        "FlakeDropFailureSpike",
        "FlakeDropNoTelemetry",
        "FlakeDropRejectsHigh",
        "FlakeDropExporterDown",
    ):
        assert name in by_name, name


def test_runbook_anchors_exist():
    anchors = runbook_anchors()
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_URL_PREFIX)
        assert anchor in anchors, f"{rule['alert']}: no heading in docs/runbook.md for #{anchor}"


def test_recording_rule_names_match_contract():
    contract_names = set(re.findall(r"`(flakedrop:[a-z0-9_:]+)`", CONTRACT.read_text()))
    assert contract_names, "no recording rule names found in docs/metrics-contract.md"
    recorded = [r["record"] for r in recording_rules()]
    assert len(recorded) == len(set(recorded)), "duplicate recording rule"
    assert set(recorded) == contract_names


def test_rules_use_only_contract_metrics():
    contract = CONTRACT.read_text()
    known = set(re.findall(r"`(flakedrop_[a-z0-9_]+)`", contract))
    for rule in load_rules():
        for metric in re.findall(r"\bflakedrop_[a-z0-9_]+", rule["expr"]):
            assert metric in known, (
                f"{rule.get('alert') or rule.get('record')}: {metric} is not in the contract"
            )


def test_store_backed_counters_are_deduplicated_not_summed():
    """Store-backed families go through `max without (instance)` before any other aggregation."""
    for rule in load_rules():
        expr = " ".join(rule["expr"].split())
        for metric in ("flakedrop_deployments_total", "flakedrop_events_total"):
            for m in re.finditer(rf"\(\s*(?:rate|increase)\({metric}\b", expr):
                prefix = expr[: m.start()].rstrip()
                assert prefix.endswith("max without (instance)"), (
                    f"{rule.get('alert') or rule.get('record')}: {metric} must be wrapped in "
                    f"max without (instance) (...): ...{expr[max(0, m.start() - 60) : m.end()]}"
                )


def test_every_rule_has_unit_tests():
    fired: dict[str, bool] = {}
    quiet: dict[str, bool] = {}
    tested_exprs = []
    for path in UNIT_TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for alert_test in case.get("alert_rule_test", []):
                name = alert_test["alertname"]
                if alert_test.get("exp_alerts"):
                    fired[name] = True
                    for exp in alert_test["exp_alerts"]:
                        assert set(exp.get("exp_annotations", {})) == {
                            "summary",
                            "description",
                            "runbook_url",
                        }
                        assert "severity" in exp.get("exp_labels", {})
                else:
                    quiet[name] = True
            tested_exprs.extend(t["expr"] for t in case.get("promql_expr_test", []))
    for name in {r["alert"] for r in alert_rules()}:
        assert fired.get(name), f"{name}: no unit test where it fires"
        assert quiet.get(name), f"{name}: no unit test where it stays quiet / resolves"
    for record in (r["record"] for r in recording_rules()):
        assert any(record in expr for expr in tested_exprs), f"{record}: no promql_expr_test"


# --- fast copy for end-to-end tests -----------------------------------------


def test_rule_windows_are_literal_and_known():
    for path in RULE_FILES:
        text = path.read_text()
        for window in re.findall(r"\[([^\]]*)\]", text):
            assert window in DEFAULT_WINDOWS, f"{path.name}: window [{window}] is not transformable"


def _without_durations(text: str) -> str:
    return re.sub(r"\[[^\]]+\]|(?:for|keep_firing_for):\s*\S+", "", text)


def test_fast_rules_pass_promtool(tmp_path):
    promtool = require_binary("promtool")
    fast_paths = []
    for path in RULE_FILES:
        original = path.read_text()
        fast = fast_rules(original)
        # Only durations and windows change: same rules, same labels/annotations.
        assert _without_durations(fast) == _without_durations(original)
        for window in DEFAULT_WINDOWS:
            assert f"[{window}]" not in fast or window in DEFAULT_WINDOWS.values()
        for rule in (r for g in yaml.safe_load(fast)["groups"] for r in g["rules"]):
            if "for" in rule:
                assert rule["for"] == "5s"
            if "keep_firing_for" in rule:
                assert rule["keep_firing_for"] == "5s"
        target = tmp_path / path.name
        target.write_text(fast)
        fast_paths.append(target)
    run(promtool, "check", "rules", *fast_paths)


def test_fast_rules_transform_examples():
    text = "expr: rate(x[1h]) / rate(x[1d])\n    for: 15m\n    keep_firing_for: 10m\n"
    assert fast_rules(text) == "expr: rate(x[2m]) / rate(x[5m])\n    for: 5s\n    keep_firing_for: 5s\n"
    assert "for: 1s" in fast_rules("for: 10m", for_duration="1s")
    with pytest.raises(ValueError):
        fast_rules("expr: rate(x[7h])")
    with pytest.raises(ValueError):
        fast_rules("expr: max_over_time(x[1h:1m])")


# --- Alertmanager ------------------------------------------------------------


def test_amtool_check_config():
    amtool = require_binary("amtool")
    proc = run(amtool, "check-config", ALERTMANAGER_YML)
    assert "SUCCESS" in proc.stdout


def test_alertmanager_documented_snippets_are_valid(tmp_path):
    amtool = require_binary("amtool")
    text = ALERTMANAGER_YML.read_text()
    anchors = ("# smtp_smarthost:", "# pagerduty_configs:", "# slack_configs:", "# email_configs:")
    for anchor in anchors:
        assert anchor in text, f"documented example {anchor!r} is gone"
    enabled = uncomment_snippets(text, anchors)
    config = yaml.safe_load(enabled)
    receivers = {r["name"]: r for r in config["receivers"]}
    assert "pagerduty_configs" in receivers["pager"]
    assert {"slack_configs", "email_configs"} <= set(receivers["team"])
    path = tmp_path / "alertmanager.yml"
    path.write_text(enabled)
    run(amtool, "check-config", path)


def test_alertmanager_config_contents():
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    route = config["route"]
    assert route["group_by"] == ["alertname", "version", "os"]
    inhibit = config["inhibit_rules"]
    assert any(
        r["source_matchers"] == ['severity="critical"']
        and r["target_matchers"] == ['severity="warning"']
        and "alertname" in r["equal"]
        for r in inhibit
    )
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert hook["url"] == "http://alert-webhook:5001/alerts"


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=FlakeDropExporterDown"], "pager"),
        (["severity=warning", "alertname=FlakeDropFailureRatioHigh"], "team"),
        (["severity=info", "alertname=FlakeDropLabelOverflow"], "null"),
        (["alertname=SomethingWithoutSeverity"], "team"),
    ],
)
def test_alertmanager_routing(labels, receiver):
    amtool = require_binary("amtool")
    proc = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *labels)
    assert proc.stdout.strip() == receiver


def test_every_severity_routes_to_its_receiver():
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    routed = {m for r in config["route"]["routes"] for m in r.get("matchers", [])}
    for severity in SEVERITIES:
        assert f'severity="{severity}"' in routed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, payload=None):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.mark.slow
def test_alertmanager_inhibits_warning_while_critical_fires(tmp_path):
    """Run the real Alertmanager with the shipped config and check the inhibition."""
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={ALERTMANAGER_YML}",
            f"--storage.path={tmp_path}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "alertmanager.log").open("w"),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
                assert time.monotonic() < deadline, "alertmanager did not become ready"
                time.sleep(0.2)

        def alert(name, severity, **labels):
            return {"labels": {"alertname": name, "severity": severity, "job": "flakedrop", **labels}}

        http_json(
            f"{base}/api/v2/alerts",
            [
                alert("FlakeDropFailureRatioHigh", "critical"),
                alert("FlakeDropFailureRatioHigh", "warning"),
                alert("FlakeDropRejectsHigh", "warning"),
                alert("FlakeDropReleaseRegression", "warning", version="1.3.0"),
            ],
        )
        deadline = time.monotonic() + 15
        while True:
            states = {
                (a["labels"]["alertname"], a["labels"]["severity"]): a["status"]
                for a in http_json(f"{base}/api/v2/alerts")
            }
            if states.get(("FlakeDropFailureRatioHigh", "warning"), {}).get("state") == "suppressed":
                break
            assert time.monotonic() < deadline, f"warning tier not inhibited: {states}"
            time.sleep(0.2)
        assert states[("FlakeDropFailureRatioHigh", "warning")]["inhibitedBy"]
        assert states[("FlakeDropFailureRatioHigh", "critical")]["state"] == "active"
        # other alert names are not muted by an unrelated critical
        assert states[("FlakeDropRejectsHigh", "warning")]["state"] == "active"
        assert states[("FlakeDropReleaseRegression", "warning")]["state"] == "active"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- thresholds: the rules file and the contract doc say what exporter/contract.py says ---------------


def expected_numbers() -> dict[tuple[str, str], list[float]]:
    """Every number literal each thresholded alert's expression must hold, from exporter/contract.py."""
    from exporter import contract as c

    return {
        ("FlakeDropFailureRatioHigh", "critical"): [c.FAILURE_RATIO_CRITICAL, c.MIN_DEPLOYMENTS],
        ("FlakeDropFailureRatioHigh", "warning"): [c.FAILURE_RATIO_WARNING, c.MIN_DEPLOYMENTS],
        # 0: the version's ratio must be non-zero; the baseline (rest of the fleet) needs as many deployments
        ("FlakeDropReleaseRegression", "warning"): [
            0,
            c.REGRESSION_FACTOR,
            c.REGRESSION_MIN_DEPLOYMENTS,
            c.REGRESSION_MIN_DEPLOYMENTS,
            c.REGRESSION_MIN_FAILURES,
        ],
        ("FlakeDropFailureSpike", "warning"): [c.SPIKE_MIN_RATIO, c.SPIKE_FACTOR, c.SPIKE_MIN_DEPLOYMENTS],
        # 0: `or 0 * rejected` keeps the ratio defined when nothing was accepted
        ("FlakeDropRejectsHigh", "warning"): [c.REJECTS_RATIO, 0, c.REJECTS_MIN],
        ("FlakeDropBackupStale", "warning"): [c.BACKUP_STALE_FACTOR],
    }


def number_literals(expr: str) -> list[float]:
    """Return the number literals of a PromQL expression, sorted."""
    promql_parser = pytest.importorskip("promql_parser", reason="pip install promql-parser")
    found: list[float] = []
    promql_parser.walk(
        promql_parser.parse(expr),
        lambda node: found.append(node.val) if isinstance(node, promql_parser.NumberLiteral) else None,
        lambda node: None,
    )
    return sorted(found)


def test_alert_thresholds_are_the_contract_modules():
    """Change a number in the rules file or in exporter/contract.py alone, and this fails."""
    rules = {(r["alert"], r["labels"]["severity"]): r for r in alert_rules()}
    for key, numbers in expected_numbers().items():
        assert key in rules, f"{key} is missing from the rules"
        assert number_literals(rules[key]["expr"]) == sorted(numbers), key


def test_alert_texts_state_the_contract_numbers():
    """Summaries and descriptions quote the same thresholds the expressions use."""
    from exporter import contract as c

    rules = {(r["alert"], r["labels"]["severity"]): r["annotations"] for r in alert_rules()}

    def text(key: tuple[str, str]) -> str:
        return rules[key]["summary"] + " " + rules[key]["description"]

    for severity, ratio in (("critical", c.FAILURE_RATIO_CRITICAL), ("warning", c.FAILURE_RATIO_WARNING)):
        said = text(("FlakeDropFailureRatioHigh", severity))
        assert f"{ratio:.0%}" in said and f"at least {c.MIN_DEPLOYMENTS} deployments" in said, severity
    said = text(("FlakeDropReleaseRegression", "warning"))
    assert f"{c.REGRESSION_FACTOR}x" in said
    assert (
        f"at least {c.REGRESSION_MIN_DEPLOYMENTS} deployments and {c.REGRESSION_MIN_FAILURES} failures"
        in said
    )
    said = text(("FlakeDropFailureSpike", "warning"))
    assert f"{c.SPIKE_FACTOR}x" in said and f"at least {c.SPIKE_MIN_DEPLOYMENTS} deployments" in said
    said = text(("FlakeDropRejectsHigh", "warning"))
    assert f"{c.REJECTS_RATIO:.0%}" in said and f"at least {c.REJECTS_MIN} rejections" in said


def test_contract_doc_states_the_contract_modules_thresholds():
    from exporter import contract as c

    section = CONTRACT.read_text().split("## Alert thresholds", 1)[1]
    bullets = {line.split(":")[0]: line for line in re.split(r"\n(?=- )", section) if line.startswith("- ")}

    def numbers(name: str) -> list[float]:
        return [float(n) for n in re.findall(r"`(\d+(?:\.\d+)?)x?`", bullets[name])]

    assert numbers("- Fleet failure ratio over 1h") == [
        c.FAILURE_RATIO_WARNING,
        c.FAILURE_RATIO_CRITICAL,
        c.MIN_DEPLOYMENTS,
    ]
    assert numbers("- Release regression") == [
        c.REGRESSION_FACTOR,
        c.REGRESSION_MIN_DEPLOYMENTS,
        c.REGRESSION_MIN_FAILURES,
    ]
    assert numbers("- Failure spike") == [c.SPIKE_MIN_RATIO, c.SPIKE_FACTOR, c.SPIKE_MIN_DEPLOYMENTS]
    assert numbers("- Rejects") == [c.REJECTS_RATIO, c.REJECTS_MIN]
    assert numbers("- Backups")[:1] == [c.BACKUP_STALE_FACTOR]
    assert numbers("- Upgrade lag (Releases board only, no alert)") == [
        c.UPGRADE_LAG_WARNING,
        c.UPGRADE_LAG_CRITICAL,
    ]
