"""Run a real Prometheus and Alertmanager on loopback, in a temporary directory, for live tests.

The configurations are generated from the repository's own files, so the live tests exercise them:

* ``prometheus_config()`` starts from ``prometheus/prometheus.yml`` and changes only what a test must:
  scrape and evaluation intervals (1 s), the targets (job ``flakedrop`` -> the exporter(s) under test,
  job ``prometheus`` -> this Prometheus itself; other jobs are dropped because their hosts do not exist
  here), ``rule_files`` (a temporary copy of ``prometheus/rules/*.yml``, optionally transformed) and
  ``alerting`` (the test's Alertmanager, or none);
* ``alertmanager_config()`` starts from ``prometheus/alertmanager.yml`` and keeps routing, grouping
  labels and inhibition; it shortens ``group_wait``/``group_interval``/``repeat_interval`` and points
  every webhook at the test's ``WebhookReceiver`` (other notifiers are dropped so nothing leaves
  loopback).

Every process is started by the test and stopped by its own PID (SIGTERM, then SIGKILL); every wait is
bounded. ``wait_for()`` polls a predicate until it returns a truthy value.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from procs import free_port

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
ALERTMANAGER_YML = PROMETHEUS_DIR / "alertmanager.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"


class StackError(RuntimeError):
    """A process of the stack failed to start, answered an error, or a wait timed out."""


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    *,
    interval: float = 0.2,
    what: str = "condition",
    check: Callable[[], None] | None = None,
) -> Any:
    """Poll predicate() until it returns a truthy value and return that value.

    Exceptions from the predicate count as "not yet" (the last one is reported). ``check`` runs on
    every round (e.g. "is the process still alive?") and may raise to stop early. On timeout raise
    TimeoutError naming ``what``, the last value and the last exception.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        if check is not None:
            check()
        try:
            last = predicate()
            last_exc = None
        except Exception as exc:
            last, last_exc = None, exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{what}: not met within {timeout:.0f}s (last value {last!r}, last error {last_exc!r})"
            )
        time.sleep(interval)


def _get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET url; return (status, decoded JSON or text), never raising on HTTP errors."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


class _Process:
    """A child process with its output in a log file in the work dir."""

    name = "process"

    def __init__(self, workdir: Path, args: list[str]) -> None:
        self.workdir = workdir
        self.args = args
        self.log_path = workdir / f"{self.name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir
        )

    def logs(self, tail: int = 80) -> str:
        """Return the last ``tail`` lines of the process's output."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            return f"<no log: {exc}>"
        return "\n".join(lines[-tail:])

    def check_alive(self) -> None:
        """Raise StackError with the log if the process has exited."""
        if self.proc.poll() is not None:
            raise StackError(f"{self.name} exited with {self.proc.returncode}:\n{self.logs()}")

    def stop(self) -> None:
        """SIGTERM the process by its PID, SIGKILL it after 10 s, reap it, close the log."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if not self._log.closed:
            self._log.close()

    def _wait_http_ready(self, url: str, timeout: float) -> None:
        def ready() -> bool:
            return _get_json(url, timeout=1)[0] == 200

        try:
            wait_for(ready, timeout, interval=0.1, what=f"{self.name} ready at {url}", check=self.check_alive)
        except TimeoutError as exc:
            raise StackError(f"{exc}\n{self.name} log:\n{self.logs()}") from None


# --------------------------------------------------------------------------------------------------
# Prometheus


def rule_texts(transform: Callable[[str], str] | None = None, rules_dir: Path = RULES_DIR) -> dict[str, str]:
    """Return {file name: text} of the repository's rule files, each passed through ``transform``."""
    files = sorted(rules_dir.glob("*.yml")) + sorted(rules_dir.glob("*.yaml"))
    if not files:
        raise StackError(f"no rule files in {rules_dir}")
    return {path.name: (transform or (lambda text: text))(path.read_text(encoding="utf-8")) for path in files}


def prometheus_config(
    *,
    self_address: str,
    exporter_targets: Iterable[str],
    rule_glob: str | None,
    alertmanager_address: str | None,
    interval: str = "1s",
    base: Path = PROMETHEUS_YML,
) -> dict[str, Any]:
    """Return the repository's Prometheus config adapted to a loopback test (see the module doc)."""
    config = yaml.safe_load(base.read_text(encoding="utf-8"))
    glob = config.setdefault("global", {})
    glob.update(scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval)
    config["rule_files"] = [rule_glob] if rule_glob else []
    if alertmanager_address:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_address]}]}]}
    else:
        config.pop("alerting", None)
    jobs = []
    for job in config.get("scrape_configs") or []:
        name = job.get("job_name")
        if name == "flakedrop":
            targets = list(exporter_targets)
        elif name == "prometheus":
            targets = [self_address]
        else:
            continue  # a host of the compose network that does not exist here
        job = copy.deepcopy(job)
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": targets}]
        for key in ("scrape_interval", "scrape_timeout"):
            if key in job:
                job[key] = interval
        # No read token in tests: an authorization block would need a credentials file.
        job.pop("authorization", None)
        jobs.append(job)
    if not any(job["job_name"] == "flakedrop" for job in jobs):
        raise StackError(f"{base} has no scrape job named 'flakedrop' (the alerts select job=\"flakedrop\")")
    config["scrape_configs"] = jobs
    return config


class Prometheus(_Process):
    """A real Prometheus on 127.0.0.1 with a generated config, its TSDB in the work dir."""

    name = "prometheus"

    def __init__(
        self,
        workdir: Path,
        *,
        exporter_targets: Iterable[str],
        rules: Mapping[str, str] | None = None,
        alertmanager_address: str | None = None,
        interval: str = "1s",
        binary: str = "prometheus",
        port: int | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        rule_glob = None
        if rules:
            rules_dir = workdir / "rules"
            rules_dir.mkdir(exist_ok=True)
            for name, text in rules.items():
                (rules_dir / name).write_text(text, encoding="utf-8")
            rule_glob = str(rules_dir / "*.yml")
        self.config = prometheus_config(
            self_address=self.address,
            exporter_targets=exporter_targets,
            rule_glob=rule_glob,
            alertmanager_address=alertmanager_address,
            interval=interval,
        )
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False), encoding="utf-8")
        super().__init__(
            workdir,
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address={self.address}",
                # Send firing alerts to Alertmanager on every evaluation, not after the 1 min default.
                "--rules.alert.resend-delay=1s",
                "--log.level=info",
            ],
        )

    def wait_ready(self, timeout: float = 30.0) -> Prometheus:
        """Wait until /-/ready answers 200 (raise with the log otherwise)."""
        self._wait_http_ready(self.url + "/-/ready", timeout)
        return self

    # -- HTTP API ----------------------------------------------------------------------------------

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        """GET /api/v1/<path>; return the whole JSON answer (status, data or errorType/error)."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
        status, body = _get_json(f"{self.url}/api/v1/{path}?{query}", timeout=10)
        if not isinstance(body, dict):
            return {"status": "error", "errorType": f"http {status}", "error": str(body)[:500]}
        return body

    def _data(self, path: str, what: str, **params: Any) -> Any:
        answer = self.api(path, **params)
        if answer.get("status") != "success":
            raise StackError(f"{what} failed: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """Instant query; return data ({"resultType", "result"}); raise StackError on an error."""
        return self._data("query", f"query {expr!r}", query=expr, time=at)

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> dict[str, Any]:
        """Range query; return data ({"resultType": "matrix", "result"}); raise StackError on an error."""
        return self._data("query_range", f"query_range {expr!r}", query=expr, start=start, end=end, step=step)

    def vector(self, expr: str, at: float | None = None) -> dict[tuple[tuple[str, str], ...], float]:
        """Instant query returning a vector, as {sorted label items: value}."""
        data = self.query(expr, at)
        if data["resultType"] != "vector":
            raise StackError(f"{expr!r} returned {data['resultType']}, not a vector")
        return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in data["result"]}

    def value(self, expr: str, at: float | None = None) -> float | None:
        """Value of a query returning one sample or a scalar; None when the result is empty."""
        data = self.query(expr, at)
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        result = data["result"]
        if not result:
            return None
        if len(result) != 1:
            raise StackError(f"{expr!r} returned {len(result)} series, expected one: {result}")
        return float(result[0]["value"][1])

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        """Values of a label, optionally only of series matching a selector (like Grafana's label_values)."""
        return self._data(f"label/{label}/values", f"label values of {label}", **{"match[]": match})

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending and firing) alerts, from /api/v1/alerts."""
        return self._data("alerts", "alerts")["alerts"]

    def rules(self) -> list[dict[str, Any]]:
        """Loaded rule groups, from /api/v1/rules."""
        return self._data("rules", "rules")["groups"]

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets, from /api/v1/targets."""
        return self._data("targets", "targets")["activeTargets"]

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
        """wait_for() that also stops early if Prometheus died; the log is in the error."""
        try:
            return wait_for(predicate, timeout, interval=interval, what=what, check=self.check_alive)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\nprometheus log:\n{self.logs(40)}") from None

    def wait_up(self, job: str = "flakedrop", count: int = 1, timeout: float = 30.0) -> None:
        """Wait until ``count`` targets of ``job`` have been scraped successfully (up == 1)."""
        self.wait_for(
            lambda: (self.value(f'sum(up{{job="{job}"}} == 1)') or 0) >= count,
            timeout,
            what=f"{count} target(s) of job {job} up",
        )

    def wait_rules_loaded(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until every rule group is loaded and has been evaluated without error."""

        def loaded() -> list[dict[str, Any]] | None:
            groups = self.rules()
            rules = [rule for group in groups for rule in group["rules"]]
            if not groups or any(group.get("lastEvaluation", "").startswith("0001") for group in groups):
                return None
            broken = [(rule["name"], rule.get("lastError")) for rule in rules if rule.get("health") == "err"]
            if broken:
                raise StackError(f"rules fail to evaluate: {broken}")
            return groups

        return self.wait_for(loaded, timeout, what="rule groups loaded and evaluated")


# --------------------------------------------------------------------------------------------------
# Alertmanager and a webhook receiver


def alertmanager_config(
    webhook_url: str,
    *,
    group_wait: str = "1s",
    group_interval: str = "1s",
    repeat_interval: str = "10s",
    base: Path = ALERTMANAGER_YML,
) -> dict[str, Any]:
    """Return the repository's Alertmanager config adapted to a loopback test (see the module doc).

    Webhook URLs keep their path but go to ``webhook_url`` (scheme, host and port). Receivers keep
    their names, routes keep their matchers and grouping, and inhibit_rules are untouched.
    """
    config = yaml.safe_load(base.read_text(encoding="utf-8"))
    target = urllib.parse.urlsplit(webhook_url)

    def shorten(route: dict[str, Any], top: bool) -> None:
        for key, value in (
            ("group_wait", group_wait),
            ("group_interval", group_interval),
            ("repeat_interval", repeat_interval),
        ):
            if top or key in route:
                route[key] = value
        for child in route.get("routes") or []:
            shorten(child, top=False)

    shorten(config["route"], top=True)
    for receiver in config.get("receivers") or []:
        for key in [k for k in receiver if k.endswith("_configs") and k != "webhook_configs"]:
            del receiver[key]  # never notify anything outside loopback from a test
        for hook in receiver.get("webhook_configs") or []:
            original = urllib.parse.urlsplit(hook["url"])
            hook["url"] = urllib.parse.urlunsplit(
                (target.scheme, target.netloc, original.path or "/", original.query, "")
            )
    return config


class Alertmanager(_Process):
    """A real single-node Alertmanager on 127.0.0.1 (clustering off), its data in the work dir."""

    name = "alertmanager"

    def __init__(
        self,
        workdir: Path,
        config: Mapping[str, Any],
        *,
        binary: str = "alertmanager",
        port: int | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
        super().__init__(
            workdir,
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.path={workdir / 'am-data'}",
                f"--web.listen-address={self.address}",
                "--cluster.listen-address=",
                "--log.level=debug",
            ],
        )

    def wait_ready(self, timeout: float = 20.0) -> Alertmanager:
        """Wait until /-/ready answers 200 (raise with the log otherwise)."""
        self._wait_http_ready(self.url + "/-/ready", timeout)
        return self

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds, from /api/v2/alerts (with their inhibited/silenced status)."""
        status, body = _get_json(self.url + "/api/v2/alerts", timeout=5)
        if status != 200 or not isinstance(body, list):
            raise StackError(f"alertmanager /api/v2/alerts answered {status}: {body!r}"[:500])
        return body


class WebhookReceiver:
    """A loopback HTTP server that records every Alertmanager webhook notification it receives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notifications: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = {"unparsable": raw.decode("utf-8", "replace")}
                with receiver._lock:
                    receiver._notifications.append(
                        {"path": self.path, "received_at": time.time(), "payload": payload}
                    )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # keep the test output clean; notifications are kept in memory

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1})
        self._thread.daemon = True
        self._thread.start()

    def notifications(self) -> list[dict[str, Any]]:
        """Every notification received so far: {"path", "received_at", "payload"}."""
        with self._lock:
            return list(self._notifications)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification, with the notification's receiver, status and path added."""
        return [
            {
                **alert,
                "receiver": note["payload"].get("receiver"),
                "notification_status": note["payload"].get("status"),
                "path": note["path"],
                "received_at": note["received_at"],
            }
            for note in self.notifications()
            for alert in note["payload"].get("alerts", [])
        ]

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def describe(*parts: Any) -> str:
    """Log tails of the stack's processes (anything with a ``log_path``: also tests' ``procs.Server``)
    and the webhook's notifications, for a failure message."""
    out = []
    for part in parts:
        if isinstance(part, WebhookReceiver):
            notes = part.notifications()
            out.append(f"----- webhook: {len(notes)} notification(s) -----")
            out.extend(json.dumps(note["payload"], sort_keys=True)[:1500] for note in notes[-20:])
        elif part is not None and hasattr(part, "log_path"):
            name = getattr(part, "name", type(part).__name__.lower())
            try:
                lines = Path(part.log_path).read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError as exc:
                lines = [f"<no log: {exc}>"]
            out.append(f"----- {name} log tail ({part.log_path}) -----")
            # waitress' "Task queue depth" warnings under load say nothing about a failure
            out.extend([line for line in lines if "waitress.queue" not in line][-60:])
    return "\n".join(out)
