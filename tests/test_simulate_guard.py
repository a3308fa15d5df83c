"""`simulate --url` never mixes demo users into a store that holds data, unless told --force (real CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import Server, free_port, http

TOKEN = "guard-read-token"


def simulate(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the real `flakedrop-telemetry simulate` with a tiny traffic plan."""
    argv = [sys.executable, "-m", "exporter", "simulate", "--url", url, "--users", "3", "--days", "1"]
    return subprocess.run(
        [*argv, "--no-progress", *extra], capture_output=True, text=True, timeout=120, check=False
    )


def total_events(server: Server) -> int:
    """Return the server's /stats total_events."""
    status, body, _ = http("GET", server.url + "/stats", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body
    return int(json.loads(body)["total_events"])


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """Return the only line simulate printed on stderr."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A real server with a read token, on a free loopback port."""
    started = Server(tmp_path / "data", "--read-token", TOKEN).wait_ready()
    try:
        yield started
    finally:
        started.stop()


def test_simulate_sends_only_to_an_empty_store_unless_forced(server: Server) -> None:
    """Empty: it sends. Holding data: exit 1 with one line and nothing sent. --force: it sends again."""
    first = simulate(server.url, "--read-token", TOKEN)
    assert first.returncode == 0, first.stderr
    held = total_events(server)
    assert held > 0
    refused = simulate(server.url, "--read-token", TOKEN)
    assert refused.returncode == 1
    assert f"already holds {held} events" in one_line(refused) and "--force" in one_line(refused)
    assert total_events(server) == held
    forced = simulate(server.url, "--force")
    assert forced.returncode == 0, forced.stderr
    assert total_events(server) > held


def test_simulate_cannot_check_without_the_read_token(server: Server) -> None:
    """A token-protected /stats is a clear refusal naming --read-token, and nothing is sent."""
    result = simulate(server.url)
    assert result.returncode == 1
    assert "needs the read token: pass --read-token" in one_line(result)
    assert total_events(server) == 0


def test_simulate_against_nothing_is_one_clear_line() -> None:
    """No server on the port: exit 1 with one line, no traceback."""
    result = simulate(f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert one_line(result).startswith("flakedrop-telemetry simulate: cannot read http://127.0.0.1:")
