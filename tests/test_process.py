"""The real `flakedrop-telemetry serve`: SIGKILL under load loses no acknowledged event; promtool likes /metrics."""

from __future__ import annotations

import http.client as http_client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from procs import Server, http
from support import require_binary

from exporter import clientbytes

pytestmark = pytest.mark.slow
HEADERS = {"Content-Type": "application/json", "User-Agent": "FlakeDrop/v1.3.0"}


def test_sigkill_mid_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data).wait_ready()
    acked: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    base_ns = int(time.time() * 1e9)

    def client(worker: int) -> None:
        for i in range(5000):
            if stop.is_set():
                return
            n = worker * 100000 + i
            body = clientbytes.deployment(f"{n:032x}", "v1.3.0", "linux", n % 3 != 0, 5, base_ns + n)
            try:
                status = http("POST", server.url + "/v1/events", body, HEADERS, timeout=5)[0]
            except (OSError, http_client.HTTPException):
                return  # the server is gone: this event was never acknowledged
            if status == 200:
                with lock:
                    acked.append(n)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) >= 300, "the load did not get going"

    again = Server(data).wait_ready()
    try:
        stats = json.loads(http("GET", again.url + "/stats")[1])
        assert stats["total_deployments"] >= len(acked), "an acknowledged event was lost"
        # every acked event counted, and nothing beyond what was in flight at the kill
        assert stats["total_deployments"] <= len(acked) + 8
        assert stats["unique_users"] == stats["total_deployments"]
        # re-sending acknowledged events after the restart is deduplicated, not recounted
        n = acked[0]
        body = clientbytes.deployment(f"{n:032x}", "v1.3.0", "linux", n % 3 != 0, 5, base_ns + n)
        assert http("POST", again.url + "/v1/events", body, HEADERS)[0] == 200
        assert (
            json.loads(http("GET", again.url + "/stats")[1])["total_deployments"]
            == stats["total_deployments"]
        )
    finally:
        assert again.stop() == 0


def test_promtool_check_metrics_is_clean(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    server = Server(tmp_path / "data").wait_ready()
    try:
        now = int(time.time() * 1e9)
        for body in (
            clientbytes.config_created(f"{1:032x}", "v1.3.0", now),
            clientbytes.heartbeat(f"{1:032x}", "v1.3.0", "darwin", "arm64", now + 1),
            clientbytes.deployment(f"{2:032x}", "v1.2.0", "linux", True, 3, now + 2),
            b'{"broken',
        ):
            http("POST", server.url + "/v1/events", body, HEADERS)
        status, text, _ = http("GET", server.url + "/metrics")
        assert status == 200
        assert b"flakedrop_deployments_total{" in text and b"flakedrop_users{" in text
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
        assert check.stdout.strip() == b"" and check.stderr.strip() == b"", "promtool reported lint problems"
    finally:
        server.stop()


def test_python_m_exporter_and_bad_settings(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--port", "0"], capture_output=True, timeout=30
    )
    assert out.returncode == 2 and b"--port" in out.stderr


def test_foreign_database_exits_nonzero_with_a_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "telemetry.db").write_bytes(b"not a database" * 1000)
    out = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--port", "1", "--data-dir", str(data)],
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert b"not a usable FlakeDrop telemetry database" in out.stderr
    assert (data / "telemetry.db").read_bytes() == b"not a database" * 1000, "never overwritten"


def _cpus(pid: int) -> str:
    """The CPUs a process may run on, as the kernel lists them."""
    text = Path(f"/proc/{pid}/status").read_text()
    return next(
        line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Cpus_allowed_list")
    )


def _writer_children(pid: int) -> list[int]:
    """PIDs of the server's store writer processes (spawned children running spawn_main)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def _start_with_cpus(tmp_path: Path, cpus: set[int]) -> Server:
    """Start a server whose allowed CPUs are `cpus` (inherited from this thread's affinity)."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        server = Server(tmp_path / "data")
    finally:
        os.sched_setaffinity(0, saved)
    return server.wait_ready()


def test_server_and_writer_are_pinned_to_different_cpus(tmp_path: Path) -> None:
    allowed = os.sched_getaffinity(0)
    server = _start_with_cpus(tmp_path, allowed)
    try:
        writers = _writer_children(server.proc.pid)
        if len(allowed) >= 2:
            assert len(writers) == 1, "the writer runs in its own process"
            mine, writer = _cpus(server.proc.pid), _cpus(writers[0])
            assert mine != writer and "," not in mine and "-" not in mine, (mine, writer)
        else:
            assert writers == [], "with one CPU the writer is a thread"
        body = clientbytes.deployment("c" * 32, "v1.3.0", "linux", True, 3, 1_795_000_000_000_000_000)
        assert http("POST", server.url + "/v1/events", body, {"Content-Type": "application/json"})[0] == 200
    finally:
        assert server.stop() == 0


def test_one_allowed_cpu_commits_in_a_thread_on_that_cpu(tmp_path: Path) -> None:
    cpu = min(os.sched_getaffinity(0))
    server = _start_with_cpus(tmp_path, {cpu})
    try:
        assert _cpus(server.proc.pid) == str(cpu)
        assert _writer_children(server.proc.pid) == [], "a writer process would share the one CPU"
        body = clientbytes.deployment("d" * 32, "v1.3.0", "linux", True, 3, 1_795_000_000_000_000_000)
        assert http("POST", server.url + "/v1/events", body, {"Content-Type": "application/json"})[0] == 200
        stats = json.loads(http("GET", server.url + "/stats")[1])
        assert stats["total_deployments"] == 1
    finally:
        assert server.stop() == 0


def test_cpu_placement_falls_back_when_pinning_is_refused(monkeypatch) -> None:
    from exporter import server
    from exporter.config import Config

    def refuse(pid: int, cpus: set[int]) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    assert server.place_on_cpus(Config(), 0) == (True, {}), "serve unpinned, writer process as configured"
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: None)
    assert server.place_on_cpus(Config(), 0) == (True, {"cpu": 1})
    assert server.place_on_cpus(Config(), 1) == (True, {"cpu": 0})
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert server.place_on_cpus(Config(), 0) == (False, {}), "one CPU: commit in a thread"
    assert server.place_on_cpus(Config(pin_cpus=False), 0) == (True, {})
