"""The writer-process store keeps the Store contract: commits in the child, reads here, failures are 503s."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import NOW

from exporter.errors import StoreError, StoreUnavailable
from exporter.store import Record, open_store


def rec(n: int, key: bytes | None = None) -> Record:
    """A deployment record for user n."""
    return Record(n.to_bytes(16, "big"), "deployment", "1.3.0", "linux", None, True, NOW, key)


@pytest.fixture
def store(tmp_path: Path):
    """A writer-process store on SQLite."""
    store = open_store(f"sqlite:///{tmp_path / 't.db'}", writer_process=True, max_versions=1)
    yield store
    store.close()


def test_writes_commit_in_the_child_and_read_here(store) -> None:
    commits: list[int] = []
    store.observe_commits(lambda n, s: commits.append(n))
    result = store.write([rec(1, b"k" * 16), rec(1, b"k" * 16), rec(2)])
    assert result.counted == [True, False, True]
    assert store.snapshot(NOW).total("deployments") == 2
    assert store.ready()
    assert store.key_fingerprint("abc") == "abc"
    assert store.prune(NOW + 1) == 2
    deadline = time.monotonic() + 5
    while not commits and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(commits) == 3


def test_version_overflow_crosses_the_pipe(store) -> None:
    first = Record((1).to_bytes(16, "big"), "heartbeat", "1.0.0", "linux", "amd64", None, NOW)
    second = Record((2).to_bytes(16, "big"), "heartbeat", "2.0.0", "linux", "amd64", None, NOW)
    assert store.write([first, second]).overflow["version"] == 1


def test_a_dead_writer_gives_503_not_a_hang(store) -> None:
    os.kill(store._proc.pid, signal.SIGKILL)
    store._proc.join(timeout=10)
    with pytest.raises(StoreUnavailable):
        store.write([rec(3)])
    assert not store.ready()


def test_start_up_errors_reach_the_parent(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(b"garbage" * 500)
    with pytest.raises(StoreError, match="not a usable"):
        open_store(f"sqlite:///{path}", writer_process=True)
