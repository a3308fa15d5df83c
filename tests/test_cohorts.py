"""Weekly cohorts by the server's clock: exact tables across New Year and restarts, migration, bounds."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

import falcon.testing
import pytest
from conftest import FakeClock
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.aggregates import fold
from exporter.app import create_app
from exporter.config import Config
from exporter.store import Record, Store, open_store
from exporter.store.base import SCHEMA_VERSION
from exporter.weeks import week_index, week_label

WEEK = 7 * 86400


def at(text: str) -> float:
    """Return the Unix time of an ISO UTC timestamp."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


def beat(user: int, when: float, kind: str = "heartbeat") -> Record:
    """A record of user number `user` received at `when` (server time)."""
    return Record(user.to_bytes(16, "big"), kind, "1.3.0", "linux", "amd64", None, when)


@pytest.fixture(params=["sqlite", "postgres", "sqlite-writer-process"])
def reopen(request, tmp_path: Path):
    """Open (and reopen, as a restart) one store of each backend and mode; closes them all at the end."""
    opened = []
    url = f"sqlite:///{tmp_path / 'cohorts.db'}"
    if request.param == "postgres":
        url = request.getfixturevalue("pg_cluster").new_database()

    def make():
        store = open_store(url, writer_process=request.param.endswith("writer-process"))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def table(store, now: float, **bounds: int) -> list[tuple[str, int, list[int]]]:
    """Return the retention table as (cohort, users, retained) rows, oldest first."""
    view = fold(store.snapshot(now), "v1.3.0", now, **bounds)
    return [(c.label, c.users, list(c.retained)) for c in view.retention.cohorts]


def test_cohorts_across_new_year_and_restarts(reopen) -> None:
    """2026-W52, 2026-W53 and 2027-W01 are consecutive weeks; cells survive each restart exactly."""
    w52, w53, w01 = at("2026-12-21T10:00:00"), at("2026-12-28T10:00:00"), at("2027-01-04T00:30:00")
    store = reopen()
    store.write([beat(n, w52) for n in (1, 2, 3, 4)] + [beat(1, w52 + 3600)])
    store.write([beat(1, w53), beat(2, w53, "deployment"), beat(5, w53)])
    store.close()
    store = reopen()
    store.write([beat(1, w01), beat(5, w01), beat(6, w01), beat(1, w01 + 86400)])
    store.close()
    store = reopen()
    now = w01 + 2 * 86400
    assert table(store, now) == [
        ("2026-W52", 4, [4, 2, 1]),
        ("2026-W53", 1, [1, 1]),
        ("2027-W01", 1, [1]),
    ]
    assert store.snapshot(now).cohorts == {
        (week_index(w52), 0): 4,
        (week_index(w52), 1): 2,
        (week_index(w52), 2): 1,
        (week_index(w53), 0): 1,
        (week_index(w53), 1): 1,
        (week_index(w01), 0): 1,
    }
    assert table(store, now, max_cohorts=2, max_weeks=1) == [("2026-W53", 1, [1]), ("2027-W01", 1, [1])]
    assert store.daily(1, w01 + 86400)[0].heartbeats == 1, "CLI runs that UTC day"


def test_pruning_removes_the_users_weeks_but_keeps_the_cells(reopen) -> None:
    """A pruned user's row and bitmap go; the cohort row stays; coming back, the user is a new cohort."""
    start = at("2026-10-05T10:00:00")
    store = reopen()
    store.write([beat(1, start), beat(2, start)])
    store.write([beat(2, start + WEEK)])
    assert store.prune(start + WEEK) == 1
    store.write([beat(1, start + 2 * WEEK)])
    assert table(store, start + 2 * WEEK) == [("2026-W41", 2, [2, 1, 0]), ("2026-W43", 1, [1])]


@pytest.fixture
def clock_app(tmp_path: Path):
    """Make (test client, store) for an app on a fresh SQLite store driven by a clock; closes the store."""
    opened = []

    def make(clock: FakeClock, **settings: object) -> tuple[falcon.testing.TestClient, Store]:
        config = Config(data_dir=str(tmp_path / "data"), user_id_key="test-key-0123456789abcdef", **settings)  # type: ignore[arg-type]
        store = open_store(config.store_url, clock=clock)
        opened.append(store)
        app = create_app(config, store=store, registry=CollectorRegistry(), clock=clock)
        return falcon.testing.TestClient(app), store

    yield make
    for store in opened:
        store.close()


def test_client_timestamps_never_move_a_cohort(clock_app) -> None:
    """Far-future and far-past client timestamps count in the server's week, for cohort and retention."""
    clock = FakeClock(at("2026-10-07T12:00:00"))
    client, _ = clock_app(clock)
    event = {"type": "heartbeat", "user_id": "ab" * 16, "version": "v1.3.0", "os": "linux", "arch": "amd64"}
    for stamp in ("2099-01-01T00:00:00Z", "1971-01-01T00:00:00Z"):
        assert client.simulate_post("/v1/events", json=[{**event, "timestamp": stamp}]).status_code == 200
    clock.advance(WEEK)
    future = {**event, "timestamp": "2030-06-01T00:00:00Z"}
    assert client.simulate_post("/v1/events", json=[future]).status_code == 200
    retention = client.simulate_get("/stats").json["retention"]
    assert retention == {
        "period": "week",
        "cohorts": [{"cohort": "2026-W41", "users": 1, "retained": [1, 1]}],
    }


def test_metrics_and_stats_stay_bounded_with_100_cohorts_of_history(clock_app) -> None:
    """100 weeks of new users, each active every week after: /metrics shows the last 12 x 12, no more."""
    clock = FakeClock(at("2025-01-06T10:00:00"))
    client, store = clock_app(clock)
    for week in range(100):
        store.write([beat(user, clock()) for user in range(week + 1)])
        clock.advance(WEEK)
    clock.advance(-WEEK)
    assert len(store.snapshot(clock()).cohorts) == sum(range(1, 63)), (
        "the read stops at the bitmap's 62 weeks"
    )
    families = {f.name: f for f in text_string_to_metric_families(client.simulate_get("/metrics").text)}
    users = families["flakedrop_cohort_users"].samples
    retained = families["flakedrop_cohort_retained_users"].samples
    assert len(users) == 12 and len(retained) == sum(range(1, 13)) <= 12 * 12
    assert {s.labels["weeks_since"] for s in retained} == {str(k) for k in range(12)}
    assert all(s.value == 1 for s in users + retained)
    newest = week_label(week_index(clock()))
    assert {s.labels["cohort"] for s in users} == {week_label(week_index(clock()) - k) for k in range(12)}
    assert newest in {s.labels["cohort"] for s in users}
    cohorts = client.simulate_get("/stats").json["retention"]["cohorts"]
    assert [len(c["retained"]) for c in cohorts] == list(range(12, 0, -1))


def test_bounds_come_from_the_settings(clock_app) -> None:
    """--retention-cohorts and --retention-weeks bound /stats and /metrics alike."""
    clock = FakeClock(at("2026-01-05T10:00:00"))
    client, _ = clock_app(clock, retention_cohorts=3, retention_weeks=2)
    event = {"type": "heartbeat", "user_id": "", "version": "v1.3.0", "os": "linux", "arch": "amd64"}
    for week in range(6):
        batch = [{**event, "user_id": f"{user:032x}"} for user in range(week + 1)]
        assert client.simulate_post("/v1/events", json=batch).status_code == 200
        clock.advance(WEEK)
    clock.advance(-WEEK)
    cohorts = client.simulate_get("/stats").json["retention"]["cohorts"]
    assert [(c["cohort"], c["retained"]) for c in cohorts] == [
        ("2026-W05", [1, 1]),
        ("2026-W06", [1, 1]),
        ("2026-W07", [1]),
    ]
    families = {f.name: f for f in text_string_to_metric_families(client.simulate_get("/metrics").text)}
    assert len(families["flakedrop_cohort_retained_users"].samples) == 5


def v2_users() -> list[tuple[bytes, int, int]]:
    """Users stored before cohorts: (id, first_seen, last_seen)."""
    start = int(at("2026-10-05T10:00:00"))
    return [
        (b"a" * 16, start, start + 3600),  # one week
        (b"b" * 16, start, start + 2 * WEEK),  # last seen two weeks later: the week between is unknown
        (b"c" * 16, start + WEEK, start + WEEK),
        (b"d" * 16, start, start + 70 * WEEK),  # past the bitmap: only the first week is kept
    ]


def expected_after_migration() -> tuple[dict[tuple[int, int], int], dict[bytes, tuple[int, int]]]:
    """The cohort cells and (first_week, weeks) rows migration 3 must produce from v2_users()."""
    week = week_index(at("2026-10-05T10:00:00"))
    cells = {(week, 0): 3, (week, 2): 1, (week + 1, 0): 1}
    rows = {b"a" * 16: (week, 1), b"b" * 16: (week, 0b101), b"c" * 16: (week + 1, 1), b"d" * 16: (week, 1)}
    return cells, rows


def test_sqlite_schema_2_users_get_their_first_and_last_weeks(tmp_path: Path) -> None:
    from exporter.store.sqlite import APPLICATION_ID, MIGRATIONS

    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 2")
    for uid, first, last in v2_users():
        conn.execute(
            "INSERT INTO users VALUES (?, ?, ?, 'linux', '1.3.0', 'amd64', 0, 0)", (uid, first, last)
        )
    conn.close()
    store = open_store(f"sqlite:///{path}")
    try:
        now = at("2026-10-05T10:00:00") + 3 * WEEK
        cells, rows = expected_after_migration()
        assert dict(store.snapshot(now).cohorts) == cells
    finally:
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert {
        bytes(r[0]): (r[1], r[2]) for r in conn.execute("SELECT id, first_week, weeks FROM users")
    } == rows
    conn.close()


def test_postgres_schema_2_users_get_their_first_and_last_weeks(pg_cluster) -> None:
    import psycopg

    from exporter.store.postgres import MIGRATIONS

    url = pg_cluster.new_database()
    with psycopg.connect(url) as conn:
        for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
            conn.execute(statement)
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '2')")
        for uid, first, last in v2_users():
            conn.execute(
                "INSERT INTO users VALUES (%s, %s, %s, 'linux', '1.3.0', 'amd64', 0, 0)", (uid, first, last)
            )
    store = open_store(url)
    try:
        cells, rows = expected_after_migration()
        assert dict(store.snapshot(at("2026-10-05T10:00:00") + 3 * WEEK).cohorts) == cells
    finally:
        store.close()
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT id, first_week, weeks FROM users").fetchall()
        assert {bytes(r[0]): (r[1], r[2]) for r in found} == rows


LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@pytest.mark.slow
def test_real_server_with_its_clock_moved_between_restarts(tmp_path: Path) -> None:
    """faketime moves a real server's clock a week per restart (one a kill -9): the table is exact."""
    import json

    from procs import Server, http
    from support import require_binary

    require_binary("faketime")
    if not LIBFAKETIME.exists():
        require_binary(str(LIBFAKETIME))
    data = tmp_path / "data"

    def serve(when: str) -> Server:
        env = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"@{when}", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        return Server(data, "--user-id-key", "test-key-0123456789abcdef", env=env).wait_ready()

    def send(server: Server, users: range | tuple[int, ...]) -> None:
        events = [
            {"type": "heartbeat", "user_id": f"{n:032x}", "version": "v1.3.0", "os": "linux"} for n in users
        ]
        body = json.dumps(events).encode()
        assert http("POST", server.url + "/v1/events", body, {"Content-Type": "application/json"})[0] == 200

    server = serve("2026-10-05 10:00:00")  # Monday of 2026-W41
    send(server, range(1, 4))
    server.kill()  # kill -9: what was acknowledged is durable
    server = serve("2026-10-12 10:00:00")  # 2026-W42
    send(server, (1, 4))
    assert server.stop() == 0
    server = serve("2026-10-21 10:00:00")  # 2026-W43
    send(server, (2,))
    try:
        stats = json.loads(http("GET", server.url + "/stats")[1])
        metrics = http("GET", server.url + "/metrics")[1].decode()
    finally:
        server.stop()
    assert stats["generated_at"].startswith("2026-10-21")
    assert stats["retention"] == {
        "period": "week",
        "cohorts": [
            {"cohort": "2026-W41", "users": 3, "retained": [3, 1, 1]},
            {"cohort": "2026-W42", "users": 1, "retained": [1, 0]},
        ],
    }
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    cells = {
        (s.labels["cohort"], s.labels["weeks_since"]): s.value
        for s in families["flakedrop_cohort_retained_users"].samples
    }
    assert cells == {
        ("2026-W41", "0"): 3,
        ("2026-W41", "1"): 1,
        ("2026-W41", "2"): 1,
        ("2026-W42", "0"): 1,
        ("2026-W42", "1"): 0,
    }


def test_stickiness_single_version_and_runs_per_active_user() -> None:
    """Stickiness is 1d / 30d actives; one real version label is flagged; runs per user use the last full day."""
    from exporter.aggregates import runs_per_active_user
    from exporter.stats import stats_document
    from exporter.store import DailyRow, Snapshot

    counters = {("users", "linux", "1.3.0", "amd64"): 4, ("heartbeats", "linux", "unknown", "amd64"): 2}
    view = fold(Snapshot(counters, {"1d": 1, "7d": 2, "30d": 4}, {}), "v1.3.5", 0.0)
    assert view.stickiness == 0.25 and view.single_version
    two = {**counters, ("heartbeats", "linux", "1.2.0", "amd64"): 1}
    assert not fold(Snapshot(two, {}, {}), "v1.3.5", 0.0).single_version
    assert fold(Snapshot({}, {}, {}), "v1.3.5", 0.0).stickiness is None
    full = DailyRow("2026-10-05", 0, 0, 0, 0, {"1.3.0": 3, "1.2.0": 1}, heartbeats=10)
    today = DailyRow("2026-10-06", 0, 0, 0, 0, {"1.3.0": 1}, heartbeats=7)
    assert full.active_users == 4 and runs_per_active_user(full) == 2.5
    assert stats_document(view, [full, today])["runs_per_active_user_1d"] == 2.5
    empty = DailyRow("2026-10-05", 0, 0, 0, 0, {})
    assert stats_document(view, [empty, today])["runs_per_active_user_1d"] == 7.0
    assert stats_document(view, [])["runs_per_active_user_1d"] is None
