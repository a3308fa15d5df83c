"""Scale-out: replicas on one PostgreSQL, faults, retention, rate limiting and the privacy scan."""

from __future__ import annotations

import http.client as http_client
import json
import threading
import time
from pathlib import Path

import falcon.testing
import pytest
from conftest import NOW, FakeClock
from procs import Server, http
from prometheus_client import CollectorRegistry
from wire_samples import HEADERS

from exporter import clientbytes
from exporter.app import create_app
from exporter.ratelimit import RateLimiter, client_ip, parse_networks
from exporter.server import Maintenance
from exporter.store import Record

KEY = "replica-shared-key-0123456789"


def body(n: int, success: bool = True, ts: int = 0) -> bytes:
    """The client's deployment bytes for user n."""
    return clientbytes.deployment(
        f"{n:032x}", "v1.3.0", "linux", success, 4, ts or 1_795_000_000_000_000_000 + n
    )


def stats(url: str) -> dict:
    """GET /stats as a dict."""
    status, raw, _ = http("GET", url + "/stats")
    assert status == 200, raw
    return json.loads(raw)


@pytest.fixture
def replicas(pg_cluster, tmp_path: Path):
    """Two real server processes on one fresh PostgreSQL database."""
    url = pg_cluster.new_database()
    servers = [
        Server(tmp_path / f"r{i}", "--database-url", url, "--user-id-key", KEY, "--channel-timeout", "5")
        for i in range(2)
    ]
    for server in servers:
        server.wait_ready()
    yield servers
    for server in servers:
        server.stop()


@pytest.mark.slow
def test_two_replicas_agree_and_count_users_once(replicas) -> None:
    for n in range(200):
        target = replicas[n % 2]
        # every user posts to both replicas: unique users must not be counted twice
        assert http("POST", target.url + "/v1/events", body(n % 100, n % 7 != 0, ts=n + 1), HEADERS)[0] == 200
    first, second = stats(replicas[0].url), stats(replicas[1].url)
    for key in ("unique_users", "total_deployments", "failed_deploys", "os_breakdown", "version_breakdown"):
        assert first[key] == second[key]
    assert first["unique_users"] == 100
    assert first["total_deployments"] == 200
    assert first["failed_deploys"] == sum(1 for n in range(200) if n % 7 == 0)


@pytest.mark.slow
def test_kill_9_of_a_replica_under_load_loses_no_acknowledged_event(replicas) -> None:
    acked: list[int] = []
    lock = threading.Lock()

    def load(worker: int) -> None:
        for i in range(400):
            n = worker * 10_000 + i
            target = replicas[n % 2]
            try:
                status = http("POST", target.url + "/v1/events", body(n), HEADERS, timeout=5)[0]
            except (OSError, http_client.HTTPException):
                continue  # the killed replica: never acknowledged
            if status == 200:
                with lock:
                    acked.append(n)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    replicas[0].kill()
    for t in threads:
        t.join(timeout=60)
    total = stats(replicas[1].url)["total_deployments"]
    assert len(acked) >= 200
    assert total >= len(acked), f"{len(acked) - total} acknowledged events lost"


@pytest.mark.slow
def test_postgres_outage_gives_503_then_recovers_without_restart(pg_cluster, tmp_path: Path) -> None:
    url = pg_cluster.new_database()
    server = Server(tmp_path / "data", "--database-url", url, "--user-id-key", KEY).wait_ready()
    try:
        assert http("POST", server.url + "/v1/events", body(1), HEADERS)[0] == 200
        pg_cluster.stop()
        status, raw, headers = http("POST", server.url + "/v1/events", body(2), HEADERS, timeout=15)
        assert status == 503 and headers["Retry-After"], raw
        assert json.loads(raw)["reason"] == "store_unavailable"
        deadline = time.monotonic() + 20
        while http("GET", server.url + "/readyz")[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert http("GET", server.url + "/readyz")[0] == 503
        assert http("GET", server.url + "/healthz")[0] == 200, "the process stays alive"
        pg_cluster.start()
        deadline = time.monotonic() + 30
        while http("GET", server.url + "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert http("GET", server.url + "/readyz")[0] == 200, "recovered by itself"
        assert http("POST", server.url + "/v1/events", body(3), HEADERS)[0] == 200
        assert stats(server.url)["total_deployments"] == 2, "the 503'd event was not applied; the others were"
        assert server.proc.poll() is None
    finally:
        if pg_cluster.proc is None:
            pg_cluster.start()
        server.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_retention_prunes_inside_the_server_with_an_injected_clock(backend, request, tmp_path: Path) -> None:
    clock = FakeClock()
    if backend == "sqlite":
        from exporter.store.sqlite import SQLiteStore

        store = SQLiteStore(tmp_path / "t.db", clock=clock)
    else:
        from exporter.store.postgres import PostgresStore

        store = PostgresStore(request.getfixturevalue("pg_cluster").new_database(), clock=clock)
    try:
        old, new = (1).to_bytes(16, "big"), (2).to_bytes(16, "big")
        store.write(
            [
                Record(old, "deployment", "1.2.0", "linux", None, True, NOW - 40 * 86400),
                Record(new, "heartbeat", "1.3.0", "darwin", "arm64", None, NOW),
            ]
        )
        maintenance = Maintenance(store, retention_days=30, clock=clock)
        assert maintenance.run_once() == 1
        assert maintenance.run_once() == 0
        snap = store.snapshot(NOW)
        assert snap.total("deployments") == 1, "aggregates are kept"
        assert snap.total("users") == 1, "the inactive user is forgotten"
        clock.advance(31 * 86400)
        assert maintenance.run_once() == 1
        assert store.user_count() == 0
    finally:
        store.close()


CLIENT_IPS = {
    "no proxy header": ("203.0.113.9", None, "", "203.0.113.9"),
    "header from an untrusted peer is ignored": ("203.0.113.9", "1.2.3.4", "", "203.0.113.9"),
    "trusted proxy": ("10.0.0.2", "198.51.100.7", "10.0.0.0/8", "198.51.100.7"),
    "spoofed left hops are ignored": ("10.0.0.2", "6.6.6.6, 198.51.100.7", "10.0.0.0/8", "198.51.100.7"),
    "chain of trusted proxies": ("10.0.0.2", "198.51.100.7, 10.0.0.3", "10.0.0.0/8", "198.51.100.7"),
}


@pytest.mark.parametrize(("remote", "xff", "trusted", "want"), CLIENT_IPS.values(), ids=CLIENT_IPS.keys())
def test_client_ip(remote: str, xff: str | None, trusted: str, want: str) -> None:
    assert client_ip(remote, xff, parse_networks(trusted)) == want


def test_token_bucket_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.allow("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.allow("a") == pytest.approx(0.5)
    assert limiter.allow("b") == 0, "buckets are per client"
    clock.advance(0.5)
    assert limiter.allow("a") == 0


def test_rate_limit_answers_429_and_counts_it(config, store, clock) -> None:
    registry = CollectorRegistry()
    app = create_app(
        config.replace(rate_limit=1.0, rate_burst=2), store=store, registry=registry, clock=clock
    )
    client = falcon.testing.TestClient(app)
    replies = [client.simulate_post("/v1/events", body=body(n), headers=HEADERS) for n in range(3)]
    assert [r.status_code for r in replies] == [200, 200, 429]
    assert replies[2].headers["retry-after"] == "1"
    assert replies[2].json["reason"] == "rate_limited"
    assert registry.get_sample_value("flakedrop_events_rejected_total", {"reason": "rate_limited"}) == 1
    assert client.simulate_get("/stats").status_code == 200, "reads are not rate limited"
    clock.advance(1.0)
    assert client.simulate_post("/v1/events", body=body(9), headers=HEADERS).status_code == 200


def test_postgres_tables_hold_no_identifier_ip_or_free_text(pg_cluster, tmp_path: Path) -> None:
    import psycopg

    url = pg_cluster.new_database()
    server = Server(tmp_path / "data", "--database-url", url, "--user-id-key", KEY).wait_ready()
    user = "9f86d081884c7d659a2feaa0c55ad015"
    try:
        http(
            "POST",
            server.url + "/v1/events",
            clientbytes.heartbeat(user, "v1.3.0", "linux", "amd64", 1),
            HEADERS,
        )
        event = {
            "id": "evt-secret-1",
            "type": "error_occurred",
            "user_id": user,
            "version": "1.3.0",
            "error": {"message": "password=hunter2", "stack": "/home/alice/deploy.go:42"},
            "properties": {"sql": "SELECT secret FROM payroll"},
        }
        assert http("POST", server.url + "/v1/events", json.dumps(event).encode(), HEADERS)[0] == 200
    finally:
        server.stop()
    dump = []
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        assert {"users", "counters", "dedup"} <= set(tables)
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                dump.append(repr(row))
                dump.extend(bytes(v).hex() for v in row if isinstance(v, bytes | memoryview))
    text = "\n".join(dump)
    for needle in (user, "127.0.0.1", "hunter2", "/home/alice", "payroll", "evt-secret-1"):
        assert needle not in text
