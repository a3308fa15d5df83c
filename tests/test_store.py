"""The Store contract: durable writes, dedup, user gauges, windows, rollups, caps, pruning, start-up checks."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from conftest import NOW
from hypothesis import given
from hypothesis import strategies as st

from exporter.errors import StoreError
from exporter.store import Record
from exporter.store.base import SCHEMA_VERSION
from exporter.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request, tmp_path: Path, clock):
    """Open stores of each backend; the same name reopens the same database (a restart)."""
    opened = []
    urls: dict[str, str] = {}

    def make(name: str = "telemetry.db", **kwargs):
        kwargs.setdefault("clock", clock)
        if request.param == "sqlite":
            store = SQLiteStore(tmp_path / name, **kwargs)
        else:
            from exporter.store.postgres import PostgresStore

            cluster = request.getfixturevalue("pg_cluster")
            if name not in urls:
                urls[name] = cluster.new_database()
            store = PostgresStore(urls[name], **kwargs)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def rec(
    user: int,
    kind: str = "heartbeat",
    version: str = "1.3.0",
    os: str | None = "linux",
    arch: str | None = "amd64",
    success: bool | None = None,
    at: float = NOW,
    key: bytes | None = None,
) -> Record:
    """Build a record for user number `user`."""
    return Record(
        user=user.to_bytes(16, "big"),
        type=kind,
        version=version,
        os=os,
        arch=arch,
        success=success,
        received_at=at,
        dedup_key=key,
    )


def users_by(store, label: int) -> dict[str, int]:
    """Sum the user gauge by one of (os, version, arch)."""
    out: dict[str, int] = {}
    for key, value in store.snapshot(NOW).family("users").items():
        out[key[label]] = out.get(key[label], 0) + value
    return {k: v for k, v in out.items() if v}


def test_write_counts_each_family(store) -> None:
    result = store.write(
        [
            rec(1, "deployment", success=True),
            rec(1, "deployment", success=False),
            rec(2, "config_created", os=None, arch=None),
            rec(3, "heartbeat"),
            rec(3, "feature_used", os=None, arch=None),
        ]
    )
    assert result.counted == [True] * 5
    snap = store.snapshot(NOW)
    assert snap.family("deployments") == {("linux", "1.3.0", "success"): 1, ("linux", "1.3.0", "failure"): 1}
    assert snap.family("configs") == {("unknown", "1.3.0", ""): 1}
    assert snap.family("heartbeats") == {("linux", "1.3.0", "amd64"): 1}
    assert snap.total("events") == 5
    assert snap.family("events")[("feature_used", "", "")] == 1
    assert sum(users_by(store, 0).values()) == 3


def test_breakdowns_count_users_by_last_seen(store) -> None:
    store.write(
        [rec(1, version="1.2.0", os="darwin"), rec(1, version="1.3.0", os="linux"), rec(2, os="windows")]
    )
    assert users_by(store, 0) == {"linux": 1, "windows": 1}
    assert users_by(store, 1) == {"1.3.0": 2}
    store.write([rec(2, version="1.4.0", os="darwin")])
    assert users_by(store, 0) == {"linux": 1, "darwin": 1}
    assert users_by(store, 1) == {"1.3.0": 1, "1.4.0": 1}


def test_config_created_takes_users_last_os(store) -> None:
    store.write([rec(1, "heartbeat", os="darwin"), rec(1, "config_created", os=None, arch=None)])
    assert store.snapshot(NOW).family("configs") == {("darwin", "1.3.0", ""): 1}


def test_dedup_by_key_across_writes_and_within_one(store) -> None:
    first = store.write([rec(1, key=b"k" * 16), rec(1, key=b"k" * 16), rec(1, key=b"j" * 16)])
    assert first.counted == [True, False, True]
    assert store.write([rec(1, key=b"k" * 16)]).counted == [False]
    assert store.snapshot(NOW).total("events") == 2


def test_active_windows(store, clock) -> None:
    store.write(
        [
            rec(1, at=NOW - 3600 * 2),
            rec(2, at=NOW - 86400 * 3),
            rec(3, at=NOW - 86400 * 20),
            rec(4, at=NOW - 86400 * 40),
        ]
    )
    assert store.snapshot(NOW).active == {"1d": 1, "7d": 2, "30d": 3}
    store.write([rec(4, at=NOW)])
    snap = store.snapshot(NOW)
    assert snap.active == {"1d": 2, "7d": 3, "30d": 4}
    assert snap.active_by_version[("7d", "1.3.0")] == 3


def test_activation_flags(store) -> None:
    store.write(
        [
            rec(1, "config_created", os=None),
            rec(2, "config_created", os=None),
            rec(2, "deployment", success=True),
            rec(3, "deployment", success=False),
        ]
    )
    flags = store.snapshot(NOW).family("user_flags")
    assert flags == {("configured", "", ""): 2, ("activated", "", ""): 2}


def test_version_cap_folds_into_other(store_factory) -> None:
    store = store_factory(max_versions=2)
    result = store.write(
        [rec(1, version="1.0.0"), rec(2, version="1.1.0"), rec(3, version="1.2.0"), rec(4, version="unknown")]
    )
    assert result.overflow["version"] == 1
    assert users_by(store, 1) == {"1.0.0": 1, "1.1.0": 1, "other": 1, "unknown": 1}
    assert store.write([rec(5, version="1.0.0")]).overflow["version"] == 0


def test_daily_rollups(store) -> None:
    store.write(
        [
            rec(1, "deployment", success=True, at=NOW - 86400),
            rec(1, "deployment", success=False),
            rec(2, "config_created", os=None),
        ]
    )
    days = store.daily(3, NOW)
    assert [d.day for d in days] == ["2026-11-26", "2026-11-27", "2026-11-28"]
    assert (days[1].deployments_success, days[1].new_users) == (1, 1)
    assert (days[2].deployments_failure, days[2].configs, days[2].new_users) == (1, 1, 1)
    assert days[2].active_by_version == {"1.3.0": 2}


def test_restart_restores_everything(store_factory) -> None:
    store = store_factory("t.db")
    store.write([rec(1, "deployment", success=True), rec(2, key=b"x" * 16)])
    store.close()
    again = store_factory("t.db")
    assert again.write([rec(1, "deployment", success=True), rec(2, key=b"x" * 16)]).counted == [
        True,
        False,
    ]
    snap = again.snapshot(NOW)
    assert snap.family("deployments")[("linux", "1.3.0", "success")] == 2
    assert sum(users_by(again, 0).values()) == 2, "known users are not counted twice after a restart"


def test_group_commit_under_concurrency(store) -> None:
    commits: list[int] = []
    store.observe_commits(lambda n, s: commits.append(n))
    errors: list[BaseException] = []

    def worker(base: int) -> None:
        try:
            for i in range(50):
                store.write([rec(base * 1000 + i, "deployment", success=True)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert store.snapshot(NOW).total("deployments") == 400
    assert sum(commits) == 400
    assert len(commits) < 400, "concurrent writers must share transactions"


def test_prune_keeps_aggregates(store) -> None:
    store.write([rec(1, "deployment", success=True, at=NOW - 86400 * 100), rec(2, "config_created", os=None)])
    assert store.prune(NOW - 86400 * 90) == 1
    snap = store.snapshot(NOW)
    assert snap.total("deployments") == 1, "event aggregates survive retention"
    assert sum(users_by(store, 0).values()) == 1
    assert snap.family("user_flags") == {("configured", "", ""): 1}
    assert store.user_count() == 1


def test_key_fingerprint_is_remembered(store) -> None:
    assert store.key_fingerprint("aaaa") == "aaaa"
    assert store.key_fingerprint("bbbb") == "aaaa"


def test_foreign_sqlite_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "foreign.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE important (x)")
    conn.execute("INSERT INTO important VALUES (42)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="did not create"):
        SQLiteStore(path)
    assert path.read_bytes() == before


def test_corrupt_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database at all" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a usable"):
        SQLiteStore(path)
    assert path.read_bytes() == before


def stamped(ns: int, salt: bytes = b"x" * 8) -> bytes:
    """A dedup key in the ingest format: the client's time in ns, then 8 bytes of hash."""
    from exporter.store.base import dedup_stamp

    return dedup_stamp(ns) + salt


def test_dedup_keys_expire_after_the_window_by_arrival(store, clock) -> None:
    first_arrival = clock()
    old_event = stamped(int((first_arrival - 60) * 1e9))
    store.write([rec(1, key=old_event, at=first_arrival)])
    clock.advance(store.dedup_window + 3600)
    now = clock()
    recent = stamped(int((now - 60) * 1e9))
    late_arrival = stamped(int((first_arrival - 7200) * 1e9), b"y" * 8)  # an old client clock, arriving now
    store.write([rec(2, key=recent, at=now), rec(3, key=late_arrival, at=now)])
    result = store.write(
        [rec(1, key=old_event, at=now), rec(2, key=recent, at=now), rec(3, key=late_arrival, at=now)]
    )
    assert result.counted == [True, False, False], "only the key that arrived before the window is forgotten"


def test_repeat_events_across_hours_count_the_user_once(store) -> None:
    # That a repeat within the hour writes no user row is the planner's job (test_planner).
    hour = NOW - NOW % 3600
    store.write([rec(1, at=hour + 10)])
    store.write([rec(1, at=hour + 20), rec(1, at=hour + 3000)])
    store.write([rec(1, at=hour + 3600)])
    snap = store.snapshot(NOW + 3600)
    assert snap.active["1d"] == 1 and sum(users_by(store, 0).values()) == 1
    assert snap.total("heartbeats") == 4


def test_prune_walks_every_chunk(store) -> None:
    old = [rec(n, at=NOW - 86400 * 100) for n in range(1, 12001, 2)]
    new = [rec(n, at=NOW) for n in range(2, 12002, 2)]
    store.write(old + new)
    assert store.prune(NOW - 86400 * 90) == 6000
    assert store.user_count() == 6000
    assert sum(users_by(store, 0).values()) == 6000


def test_schema_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    from exporter.store.sqlite import APPLICATION_ID, MIGRATIONS

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO users VALUES (?, 1, 2, 'linux', '1.3.0', 'amd64', 0, 1)", (b"u" * 16,))
    conn.execute("INSERT INTO dedup VALUES (?, 5)", (b"k" * 16,))
    conn.close()
    store = SQLiteStore(path)
    try:
        assert store.user_count() == 1, "users survive the migration"
    finally:
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM dedup").fetchone()[0] == 0, "old-format keys can never match"
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert not indexes & {"dedup_at", "users_last_seen"}
    conn.close()


def test_group_commit_waits_for_announced_requests(store_factory) -> None:
    store = store_factory(gather_delay=20.0)  # long, so only the second request's arrival can end the wait
    commits: list[int] = []
    store.observe_commits(lambda n, seconds: commits.append(n))
    arrivals = store.arrivals
    arrivals.announce()
    arrivals.announce()
    done = threading.Event()

    def first() -> None:
        arrivals.withdraw()
        store.write([rec(1)])
        done.set()

    thread = threading.Thread(target=first)
    thread.start()
    assert not done.wait(0.3), "the commit holds while another announced request is being parsed"
    arrivals.withdraw()
    store.write([rec(2)])
    thread.join(timeout=10)
    assert done.is_set() and commits == [2], "both requests share one transaction"


def test_a_lone_request_commits_at_once(store_factory) -> None:
    store = store_factory(gather_delay=60.0)
    finished = threading.Event()
    thread = threading.Thread(target=lambda: (store.write([rec(1)]), finished.set()))
    thread.start()
    thread.join(timeout=10)
    assert finished.is_set(), "with nothing announced there is nothing to wait for"


def test_prune_covers_every_id_slice(store) -> None:
    import random

    from exporter.store.sql import PRUNE_SLICES, prune_slices

    rng = random.Random(5)
    ids = [rng.randbytes(16) for _ in range(4000)] + [bytes([0]) * 16, bytes([255]) * 16]
    old = [
        Record(
            user=u,
            type="heartbeat",
            version="1.3.0",
            os="linux",
            arch="amd64",
            success=None,
            received_at=NOW - 86400 * 100,
        )
        for u in ids[::2]
    ]
    new = [
        Record(
            user=u, type="heartbeat", version="1.3.0", os="linux", arch="amd64", success=None, received_at=NOW
        )
        for u in ids[1::2]
    ]
    store.write(old + new)
    assert (
        len(
            {
                s
                for s in prune_slices(PRUNE_SLICES)
                for u in ids[::2]
                if s[0] <= u and (s[1] is None or u < s[1])
            }
        )
        == PRUNE_SLICES
    )
    assert store.prune(NOW - 86400 * 90) == len(old)
    assert store.user_count() == len(new)
    assert sum(users_by(store, 0).values()) == len(new)


def test_every_resend_in_a_batch_is_one_duplicate(client, registry) -> None:
    import json

    def event(n: int) -> dict:
        return {
            "type": "deployment",
            "user_id": f"{n:032x}",
            "version": "v1.3.0",
            "os": "linux",
            "success": True,
            "timestamp": "2026-11-28T09:00:00Z",
        }

    def post(batch: list[dict]) -> dict:
        resp = client.simulate_post(
            "/v1/events", body=json.dumps(batch), headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 200
        return resp.json

    assert post([event(1), event(1), event(1), event(2), event(2)])["duplicates"] == 3
    assert registry.get_sample_value("flakedrop_events_duplicate_total") == 3
    assert post([event(2), event(1), event(3)])["duplicates"] == 2, "resends across batches count too"
    assert registry.get_sample_value("flakedrop_events_duplicate_total") == 5
    assert client.simulate_get("/stats").json["total_deployments"] == 3


@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=40), budget=st.integers(1, 100))
def test_one_commit_takes_the_longest_run_of_writes_within_the_budget(sizes: list[int], budget: int) -> None:
    from exporter.store.commit import first_group

    taken = first_group(sizes, budget)
    assert 1 <= taken <= len(sizes), "a write larger than the budget still goes, alone"
    assert taken == 1 or sum(sizes[:taken]) <= budget
    assert taken == len(sizes) or sum(sizes[: taken + 1]) > budget
