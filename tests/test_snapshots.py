"""Scheduled snapshots: names sort in time order, rotation keeps the newest, the metrics move, failures count."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import NOW, FakeClock
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from test_backup import fill

from exporter.config import Config
from exporter.restore import verify
from exporter.snapshots import Snapshots, snapshot_name, snapshot_time
from exporter.store.base import Record

LAST = "flakedrop_backup_last_success_timestamp_seconds"
FAILURES = "flakedrop_backup_failures_total"


@given(st.lists(st.floats(0, 4e9), min_size=2, max_size=20))
def test_names_sort_in_time_order_and_read_back(times: list[float]) -> None:
    names = [snapshot_name(t, "db") for t in times]
    millis = [round(t * 1000) for t in times]
    assert sorted(names) == [snapshot_name(m / 1000, "db") for m in sorted(millis)]
    for name, m in zip(names, millis, strict=True):
        assert snapshot_time(name) == pytest.approx(m / 1000, abs=1e-6)


def make(tmp_path: Path, clock: FakeClock, keep: int = 3) -> tuple[Snapshots, CollectorRegistry]:
    """A scheduler over a small filled store, with a fresh registry."""
    fill(tmp_path / "data", [Record(b"u" * 16, "deployment", "1.3.0", "linux", "amd64", True, NOW)])
    config = Config(data_dir=str(tmp_path / "data"), backup_dir=str(tmp_path / "snaps"), backup_keep=keep)
    registry = CollectorRegistry()
    return Snapshots(config, registry, clock=clock), registry


def test_rotation_keeps_the_newest_and_the_metric_follows(tmp_path: Path, clock: FakeClock) -> None:
    snapshots, registry = make(tmp_path, clock, keep=3)
    assert registry.get_sample_value(LAST) == 0
    assert registry.get_sample_value("flakedrop_backup_interval_seconds") == 3600
    taken = []
    for _ in range(5):
        clock.advance(3600)
        path = snapshots.run_once()
        assert path is not None
        taken.append(path)
        assert registry.get_sample_value(LAST) == clock.now
    left = sorted((tmp_path / "snaps").iterdir())
    assert left == taken[-3:]
    assert all(verify(path).users == 1 for path in left)
    assert registry.get_sample_value(FAILURES) == 0


def test_failures_count_and_freshness_stays(tmp_path: Path, clock: FakeClock) -> None:
    snapshots, registry = make(tmp_path, clock)
    assert snapshots.run_once() is not None
    good = clock.now
    (tmp_path / "data" / "telemetry.db").rename(tmp_path / "gone.db")
    clock.advance(3600)
    assert snapshots.run_once() is None
    assert registry.get_sample_value(FAILURES) == 1
    assert registry.get_sample_value(LAST) == good
    assert len(list((tmp_path / "snaps").iterdir())) == 1


def test_restart_reads_freshness_from_the_directory_and_sweeps_temp_files(tmp_path: Path, clock) -> None:
    snapshots, _ = make(tmp_path, clock)
    snapshots.run_once()
    stale = tmp_path / "snaps" / (snapshot_name(NOW + 5, "db") + ".tmp-999999")
    stale.write_bytes(b"half a snapshot")
    registry = CollectorRegistry()
    again = Snapshots(snapshots.config, registry, clock=clock)
    assert registry.get_sample_value(LAST) == pytest.approx(NOW, abs=0.001)
    again.sweep()
    assert not stale.exists()


def test_a_restart_waits_until_the_newest_snapshot_is_an_interval_old(
    tmp_path: Path, clock: FakeClock
) -> None:
    """No snapshot of its own at start-up: the first one is due an interval after the newest on disk."""
    snapshots, _ = make(tmp_path, clock)
    assert snapshots.first_delay() == 0  # none yet: take one at once
    snapshots.run_once()
    clock.advance(600)
    again = Snapshots(snapshots.config, CollectorRegistry(), clock=clock)
    assert again.first_delay() == pytest.approx(3000, abs=0.01)
    clock.advance(5000)
    assert again.first_delay() == 0


@pytest.mark.slow
def test_running_server_takes_rotates_and_reports_snapshots(tmp_path: Path) -> None:
    from procs import Server, http

    fill(tmp_path / "data", [])
    snaps = tmp_path / "snaps"
    server = Server(
        tmp_path / "data", "--backup-dir", str(snaps), "--backup-interval", "1", "--backup-keep", "2"
    )
    seen: set[float] = set()
    try:
        server.wait_ready()
        deadline = time.monotonic() + 30
        while len(seen) < 4 and time.monotonic() < deadline:
            body = http("GET", server.url + "/metrics")[1].decode()
            for line in body.splitlines():
                if line.startswith(LAST + " "):
                    seen.add(float(line.split()[1]))
            http(
                "POST",
                server.url + "/v1/events",
                json.dumps(
                    {"type": "heartbeat", "user_id": "ab" * 16, "version": "v1.3.0", "os": "linux"}
                ).encode(),
                {"Content-Type": "application/json"},
            )
            time.sleep(0.2)
    finally:
        assert server.stop() == 0
    assert len(seen - {0.0}) >= 3, f"the freshness metric did not move: {sorted(seen)}"
    left = sorted(snaps.iterdir())
    assert len(left) == 2 and all(verify(path) for path in left)
