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


def stamped(ns: int, salt: bytes) -> bytes:
    """A dedup key in the ingest format: the client's time in ns, then 8 bytes of hash."""
    from exporter.store.base import dedup_stamp

    return dedup_stamp(ns) + salt


@pytest.mark.parametrize("writer_process", [True, False], ids=["writer-process", "thread"])
def test_dedup_expiry_follows_the_injected_clock_in_every_mode(tmp_path: Path, writer_process: bool) -> None:
    from conftest import FakeClock

    clock = FakeClock()
    window = 3 * 3600
    store = open_store(
        f"sqlite:///{tmp_path / 't.db'}", writer_process=writer_process, dedup_window=window, clock=clock
    )
    start = clock()
    first = stamped(int((start - 60) * 1e9), b"a" * 8)
    second = stamped(int((start + window - 120) * 1e9), b"b" * 8)

    def write(*keys: bytes) -> list[bool]:
        records = [
            Record(n.to_bytes(16, "big"), "heartbeat", "1.3.0", "linux", "amd64", None, clock(), key)
            for n, key in enumerate(keys, 1)
        ]
        return store.write(records).counted

    try:
        seen = [write(first)]
        clock.advance(window - 60)
        seen.append(write(first, second))
        clock.advance(120)  # the first key arrived more than the window ago; the second did not
        seen.append(write(first, second))
    finally:
        store.close()
    assert seen == [[True], [False, True], [True, False]]


def test_an_unknown_op_gets_an_explicit_error(tmp_path: Path) -> None:
    import multiprocessing

    from exporter.store import open_backend
    from exporter.store.messages import Call, FaultKind, Op, decode_call
    from exporter.store.process import WriterSession
    from exporter.store.sql import Writer

    backend = open_backend(f"sqlite:///{tmp_path / 't.db'}")
    backend.prepare()
    writer = Writer(backend)
    try:
        session = WriterSession(writer, NOW)
        ours, theirs = multiprocessing.Pipe()
        with ours, theirs:
            ours.send((7, "bogus", NOW, None))  # what a parent naming an op this child lacks would send
            bogus = decode_call(theirs.recv())
        answered, keep_going = session.serve([bogus, Call(8, Op.KEY_FINGERPRINT, NOW, "ab")])
    finally:
        writer.close()
    assert keep_going
    assert answered.values == [(8, "ab")]
    [(call_id, fault)] = answered.faults
    assert call_id == 7 and fault.kind is FaultKind.ERROR and "bogus" in fault.reason


@pytest.mark.parametrize(
    "error",
    [StoreUnavailable("the disk is full; retry later", retry_after=30), StoreError("schema 9 is too new")],
    ids=["unavailable", "error"],
)
def test_faults_keep_their_type_and_reason_across_the_pipe(error: Exception) -> None:
    import multiprocessing

    from exporter.store.messages import Fault

    ours, theirs = multiprocessing.Pipe()
    try:
        ours.send(Fault.of(error))
        again = theirs.recv().exception()
    finally:
        ours.close()
        theirs.close()
    assert type(again) is type(error) and str(again) == str(error)
    if isinstance(error, StoreUnavailable):
        assert isinstance(again, StoreUnavailable)
        assert (again.description, again.retry_after) == (error.description, error.retry_after)


def test_writer_process_and_thread_modes_agree_on_a_random_workload(tmp_path: Path) -> None:
    import random

    from conftest import FakeClock

    rng = random.Random(13)
    batches = [
        [
            Record(
                rng.randrange(40).to_bytes(16, "big"),
                rng.choice(["heartbeat", "deployment", "config_created", "feature_used"]),
                rng.choice(["1.0.0", "1.2.0", "1.3.0", "2.0.0", "unknown"]),
                rng.choice(["linux", "darwin", "other", None]),
                rng.choice(["amd64", "arm64", None]),
                rng.choice([True, False]),
                NOW + 600 * n,
                rng.choice([None, None, bytes([rng.randrange(30)]) * 16]),
            )
            for _ in range(rng.randrange(1, 30))
        ]
        for n in range(40)
    ]
    outcomes = []
    for writer_process in (True, False):
        clock = FakeClock()
        store = open_store(
            f"sqlite:///{tmp_path / f'{writer_process}.db'}",
            writer_process=writer_process,
            max_versions=3,
            clock=clock,
        )
        try:
            results = []
            for batch in batches:
                result = store.write(batch)
                results.append((result.counted, dict(result.overflow)))
                clock.advance(600)
            outcomes.append(
                (results, store.snapshot(clock()), store.daily(3, clock()), store.prune(NOW + 3600))
            )
        finally:
            store.close()
    assert outcomes[0] == outcomes[1]
    assert any(False in counted for counted, _ in outcomes[0][0]), "the workload has duplicates"
    assert any(overflow for _, overflow in outcomes[0][0]), "and overflows the version cap"
