"""Storage faults on SQLite: a full and a read-only data dir (a real small tmpfs), and foreign files at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import Server, http
from support import tmpfs

from exporter import clientbytes

pytestmark = pytest.mark.slow
HEADERS = {"Content-Type": "application/json", "User-Agent": "FlakeDrop/v1.3.0"}


def mount(*args: str) -> subprocess.CompletedProcess:
    """Run mount/umount, returning the result."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs we can fill and remount read-only."""
    with tmpfs(tmp_path / "fs", "4m") as target:
        yield target


def post(server: Server, n: int) -> int:
    """Post one client deployment for user n; return the status."""
    body = clientbytes.deployment(f"{n:032x}", "v1.3.0", "linux", True, 3, 1_795_000_000_000_000_000 + n)
    return http("POST", server.url + "/v1/events", body, HEADERS, timeout=15)[0]


def wait_ready(server: Server, want: int, seconds: float = 20.0) -> int:
    """Poll /readyz until it answers `want`; return the last status."""
    deadline = time.monotonic() + seconds
    status = 0
    while time.monotonic() < deadline:
        status = http("GET", server.url + "/readyz")[0]
        if status == want:
            break
        time.sleep(0.2)
    return status


def test_full_disk_gives_503_and_recovers_by_itself(small_fs: Path) -> None:
    server = Server(small_fs / "data").wait_ready()
    acked = 0
    try:
        for n in range(50):
            assert post(server, n) == 200
            acked += 1
        filler = small_fs / "filler"
        with open(filler, "wb") as handle:  # take every free byte
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass
        statuses = []
        for n in range(1000, 1400):
            status = post(server, n)
            statuses.append(status)
            acked += status == 200
            if status == 503:
                break
        assert statuses[-1] == 503, "a full disk must answer 503"
        status, raw, headers = http("POST", server.url + "/v1/events", b'{"broken', HEADERS)
        assert status == 400, "bad input is still judged first"
        status, raw, headers = http(
            "POST",
            server.url + "/v1/events",
            clientbytes.deployment("a" * 32, "v1.3.0", "linux", True, 1, 5),
            HEADERS,
        )
        assert status == 503 and headers["Retry-After"]
        assert json.loads(raw)["reason"] == "store_unavailable"
        assert wait_ready(server, 503) == 503
        assert http("GET", server.url + "/healthz")[0] == 200 and server.proc.poll() is None
        filler.unlink()  # space returns
        assert wait_ready(server, 200) == 200, "recovered without a restart"
        assert post(server, 5000) == 200
        acked += 1
        stats = json.loads(http("GET", server.url + "/stats")[1])
        assert stats["total_deployments"] == acked, "no acknowledged event lost, no 503'd event applied"
    finally:
        assert server.stop() == 0


def test_read_only_data_dir_is_refused_clearly_and_data_survives(small_fs: Path) -> None:
    """A live remount read-only is refused by the kernel while files are open, so fault the next start."""
    data = small_fs / "data"
    server = Server(data).wait_ready()
    assert post(server, 1) == 200
    assert server.stop() == 0
    deadline = time.monotonic() + 10  # the writer child may still be closing its files
    while mount("mount", "-o", "remount,ro", str(small_fs)).returncode != 0:
        assert time.monotonic() < deadline, "could not remount read-only"
        time.sleep(0.1)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "exporter", "serve", "--port", "1", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out.stderr
        assert "cannot start" in out.stderr and "read-only" in out.stderr.lower()
    finally:
        assert mount("mount", "-o", "remount,rw", str(small_fs)).returncode == 0
    again = Server(data).wait_ready()
    try:
        assert json.loads(http("GET", again.url + "/stats")[1])["total_deployments"] == 1
    finally:
        again.stop()


def test_unwritable_data_dir_at_start_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        data = tmp_path / "file-not-dir"
        data.write_text("x")  # even root cannot create a directory where a file is
    else:
        data = tmp_path / "ro"
        data.mkdir(mode=0o500)
    out = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--port", "1", "--data-dir", str(data / "sub")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "cannot start" in out.stderr
