"""The HTTP API through falcon.testing: the client's bytes, batches, errors, stats, metrics, auth."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from conftest import NOW
from wire_samples import CONFIG_CREATED, DEPLOYMENT, HEADERS, HEARTBEAT, USER


def post(client, body: bytes | str, headers: dict | None = None):
    """POST raw bytes to /v1/events."""
    return client.simulate_post("/v1/events", body=body, headers=headers or HEADERS)


def rejected(registry, reason: str) -> float:
    """Read flakedrop_events_rejected_total for a reason."""
    return registry.get_sample_value("flakedrop_events_rejected_total", {"reason": reason}) or 0.0


def user(n: int) -> str:
    """A 32-hex user id."""
    return f"{n:032x}"


def deployment(
    n: int, success: bool = True, version: str = "v1.3.0", os: str = "linux", ts: str | None = None
) -> dict:
    """A flat deployment event."""
    event = {"type": "deployment", "user_id": user(n), "version": version, "os": os, "success": success}
    if ts:
        event["timestamp"] = ts
    return event


@pytest.mark.parametrize(
    "body", [HEARTBEAT, CONFIG_CREATED, DEPLOYMENT], ids=["heartbeat", "config", "deployment"]
)
def test_client_bytes_get_the_reference_reply(client, body: bytes) -> None:
    resp = post(client, body)
    assert resp.status_code == 200
    assert resp.json == {"status": "ok"}


def test_client_traffic_shows_in_stats(client) -> None:
    for body in (CONFIG_CREATED, HEARTBEAT, DEPLOYMENT):
        assert post(client, body).status_code == 200
    stats = client.simulate_get("/stats").json
    assert stats["unique_users"] == 1
    assert stats["total_deployments"] == 1 and stats["failed_deploys"] == 1
    assert stats["configs_created"] == 1 and stats["heartbeats"] == 1 and stats["total_events"] == 3
    assert stats["os_breakdown"] == {"linux": 1}, "last seen os wins"
    assert stats["version_breakdown"] == {"1.3.0": 1}
    assert stats["arch_breakdown"] == {"arm64": 1}


def test_duplicate_is_acknowledged_but_counted_once(client, registry) -> None:
    assert post(client, DEPLOYMENT).status_code == 200
    assert post(client, DEPLOYMENT).json == {"status": "ok"}
    assert client.simulate_get("/stats").json["total_deployments"] == 1
    assert registry.get_sample_value("flakedrop_events_duplicate_total") == 1


def test_batch_reply_reports_each_item(client, registry) -> None:
    batch = [
        deployment(1),
        deployment(2, False),
        {"type": "deployment", "user_id": "nope"},
        deployment(1),
        {"type": "bogus", "user_id": user(3), "version": "1"},
    ]
    batch[3]["timestamp"] = batch[0]["timestamp"] = "2026-11-27T10:00:00Z"
    resp = post(client, json.dumps(batch))
    assert resp.status_code == 200
    assert resp.json["accepted"] == 2 and resp.json["duplicates"] == 1
    assert [(r["index"], r["reason"]) for r in resp.json["rejected"]] == [
        (2, "invalid_field"),
        (4, "unknown_type"),
    ]
    assert rejected(registry, "invalid_field") == 1 and rejected(registry, "unknown_type") == 1


def test_events_wrapper_and_gzip(client) -> None:
    body = gzip.compress(json.dumps({"events": [deployment(i) for i in range(10)]}).encode())
    resp = post(client, body, {**HEADERS, "Content-Encoding": "gzip"})
    assert resp.json == {"accepted": 10, "duplicates": 0, "rejected": []}


def test_batch_with_nothing_valid_is_400(client) -> None:
    resp = post(client, json.dumps([{"type": "heartbeat"}, {"type": "x"}]))
    assert resp.status_code == 400
    assert len(resp.json["rejected"]) == 2


def test_batch_over_max_is_413(client, registry) -> None:
    resp = post(client, json.dumps([deployment(i) for i in range(101)]))
    assert resp.status_code == 413 and resp.json["reason"] == "batch_too_large"
    assert rejected(registry, "batch_too_large") == 1
    assert client.simulate_get("/stats").json["total_events"] == 0


BAD = {
    "broken json": (b'{"type": ', HEADERS, 400, "invalid_json"),
    "form content type": (
        DEPLOYMENT,
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
    ),
    "missing user_id": (b'{"type":"heartbeat","version":"1.0.0"}', HEADERS, 400, "missing_field"),
    "ill-typed success": (
        b'{"type":"deployment","user_id":"' + USER.encode() + b'","version":"1.0.0","success":1}',
        HEADERS,
        400,
        "invalid_field",
    ),
    "unknown type": (
        b'{"type":"nope","user_id":"' + USER.encode() + b'","version":"1.0.0"}',
        HEADERS,
        400,
        "unknown_type",
    ),
    "invalid utf-8": (b'{"type":"\xff"}', HEADERS, 400, "bad_encoding"),
    "NaN": (b'{"type":"heartbeat","x":NaN}', HEADERS, 400, "invalid_json"),
    "deep nesting": (b"[" * 5000 + b"]" * 5000, HEADERS, 400, "invalid_json"),
    "huge number": (b'{"x":' + b"1" * 100000 + b"}", HEADERS, 400, "invalid_json"),
    "brotli": (b"xx", {**HEADERS, "Content-Encoding": "br"}, 415, "bad_encoding"),
    "json array of numbers": (b"[1,2,3]", HEADERS, 400, "invalid_batch"),
}


@pytest.mark.parametrize(("body", "headers", "status", "reason"), BAD.values(), ids=BAD.keys())
def test_bad_input_is_a_clear_4xx_and_counted(client, registry, body, headers, status, reason) -> None:
    resp = post(client, body, headers)
    assert resp.status_code == status
    assert resp.json["reason"] == reason
    assert resp.json["description"], "the body must say what is wrong"
    if reason != "invalid_batch":
        assert rejected(registry, reason) == 1


def test_body_over_limit_is_413_from_content_length(client, registry) -> None:
    resp = post(client, b"x" * (1024 * 1024 + 1))
    assert resp.status_code == 413 and resp.json["field"] == "Content-Length"
    assert rejected(registry, "body_too_large") == 1


def test_gzip_bomb_is_413(client) -> None:
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9)
    resp = post(client, bomb, {**HEADERS, "Content-Encoding": "gzip"})
    assert resp.status_code == 413


def test_update_check(client) -> None:
    resp = client.simulate_get("/v1/version/latest")
    assert resp.status_code == 200
    assert resp.json == {
        "latest_version": "v1.3.5",
        "release_date": "2026-11-20",
        "update_url": "https://github.com/flakedrop/flakedrop/releases/latest",
        "critical": False,
    }


def test_health_and_ready(client) -> None:
    assert client.simulate_get("/healthz").json == {"status": "ok"}
    assert client.simulate_get("/readyz").status_code == 200


def test_stats_and_metrics_agree(client, registry) -> None:
    for i in range(5):
        post(client, json.dumps(deployment(i, success=i % 2 == 0, os="darwin" if i < 2 else "linux")))
    post(client, CONFIG_CREATED)
    stats = client.simulate_get("/stats").json
    metrics = client.simulate_get("/metrics").text
    assert "flakedrop_deployments_total" in metrics
    get = registry.get_sample_value
    assert get("flakedrop_deployments_total", {"os": "darwin", "version": "1.3.0", "outcome": "success"}) == 1
    total = sum(
        get("flakedrop_deployments_total", {"os": o, "version": "1.3.0", "outcome": r}) or 0
        for o in ("darwin", "linux")
        for r in ("success", "failure")
    )
    assert total == stats["total_deployments"] == 5
    users = sum(
        get("flakedrop_users", {"os": o, "version": "1.3.0"}) or 0 for o in ("darwin", "linux", "unknown")
    )
    assert users == stats["unique_users"] == 6
    assert get("flakedrop_active_users", {"window": "7d"}) == stats["active_users"]["7d"] == 6
    assert get("flakedrop_configs_created_total", {"os": "unknown", "version": "1.3.0"}) == 1
    assert get("flakedrop_events_total", {"type": "deployment"}) == 5
    assert get("flakedrop_latest_version_info", {"version": "1.3.5"}) == 1


def test_metrics_negotiates_openmetrics_and_gzip(client) -> None:
    resp = client.simulate_get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    assert resp.text.rstrip().endswith("# EOF")
    resp = client.simulate_get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert resp.headers.get("content-encoding") == "gzip"
    assert b"flakedrop_build_info" in gzip.decompress(resp.content)


def test_reference_readme_example_is_reproduced(client) -> None:
    """142 users (89 darwin, 48 linux, 5 windows; 45 on 1.0.0, 97 on 1.1.0), 1823 deployments, 178 configs."""
    oses = ["darwin"] * 89 + ["linux"] * 48 + ["windows"] * 5
    versions = ["1.0.0"] * 45 + ["1.1.0"] * 97
    events = []
    for n in range(142):
        events.append({"type": "config_created", "user_id": user(n), "version": "v" + versions[n]})
        if n < 36:
            events.append({"type": "config_created", "user_id": user(n), "version": "v" + versions[n]})
        events.append(
            {
                "type": "heartbeat",
                "user_id": user(n),
                "version": "v" + versions[n],
                "os": oses[n],
                "arch": "arm64",
            }
        )
    for i in range(1823):
        events.append(
            deployment(i % 142, success=i >= 136, version="v" + versions[i % 142], os=oses[i % 142])
        )
    for start in range(0, len(events), 100):
        assert post(client, json.dumps(events[start : start + 100])).json["rejected"] == []
    stats = client.simulate_get("/stats").json
    reference = {
        "unique_users": 142,
        "total_deployments": 1823,
        "successful_deploys": 1687,
        "failed_deploys": 136,
        "configs_created": 178,
        "os_breakdown": {"darwin": 89, "linux": 48, "windows": 5},
        "version_breakdown": {"1.0.0": 45, "1.1.0": 97},
    }
    assert {key: stats[key] for key in reference} == reference


def test_stats_has_every_documented_key(client) -> None:
    keys = set(client.simulate_get("/stats").json)
    assert {
        "unique_users",
        "total_deployments",
        "successful_deploys",
        "failed_deploys",
        "configs_created",
        "os_breakdown",
        "version_breakdown",
        "total_events",
        "success_rate",
        "active_users",
        "heartbeats",
        "arch_breakdown",
        "activated_users",
        "activation_rate",
        "latest_version",
        "users_on_latest",
        "generated_at",
    } <= keys


def test_store_keeps_no_identifier_as_received(client, tmp_path) -> None:
    post(client, HEARTBEAT)
    post(
        client,
        json.dumps(
            {
                "id": "evt-1",
                "type": "error_occurred",
                "user_id": USER,
                "version": "1.3.0",
                "error": {"message": "secret-sql SELECT 1", "stack": "/home/alice/x.go"},
            }
        ),
    )
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("telemetry.db*"))
    assert raw, "the store files exist"
    for needle in (USER.encode(), bytes.fromhex(USER), b"secret-sql", b"/home/alice", b"evt-1", b"127.0.0.1"):
        assert needle not in raw


class TestReadToken:
    """With --read-token, the read endpoints need it; ingest, update check and health stay open."""

    @pytest.fixture
    def config(self, config):
        return config.replace(read_token="s3cret-token")

    @pytest.mark.parametrize("path", ["/", "/stats", "/metrics"])
    def test_protected_without_token(self, client, path: str) -> None:
        resp = client.simulate_get(path)
        assert resp.status_code == 401
        assert "Basic" in resp.headers["www-authenticate"]

    @pytest.mark.parametrize("path", ["/", "/stats", "/metrics"])
    def test_bearer_and_basic(self, client, path: str) -> None:
        assert client.simulate_get(path, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        basic = base64.b64encode(b"anyone:s3cret-token").decode()
        assert client.simulate_get(path, headers={"Authorization": f"Basic {basic}"}).status_code == 200
        assert client.simulate_get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401

    def test_open_endpoints(self, client) -> None:
        assert post(client, DEPLOYMENT).status_code == 200
        for path in ("/v1/version/latest", "/healthz", "/readyz"):
            assert client.simulate_get(path).status_code == 200


def test_page_escapes_client_strings(client) -> None:
    # The empty state shows the address the client used: the Host header reaches the page as-is.
    empty = client.simulate_get("/", headers={"Host": "h'><img src=x onerror=alert(1)>"}).text
    assert "No events yet" in empty and "<img src=x" not in empty and "h&#39;&gt;&lt;img" in empty
    post(
        client,
        json.dumps(
            {
                "type": "heartbeat",
                "user_id": user(9),
                "version": "<script>alert(1)</script>",
                "os": "<img src=x onerror=alert(1)>",
                "arch": "amd64",
            }
        ),
    )
    page = client.simulate_get("/").text
    assert "<script>alert" not in page and "<img src=x" not in page


def test_simulated_traffic_gives_what_simulate_expects(client) -> None:
    from exporter.simulate import plan_traffic

    events, expected = plan_traffic(80, 3, seed=11, now=NOW)
    for event in events:
        resp = client.simulate_post(
            "/v1/events", body=event.body, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 200, resp.text
    stats = client.simulate_get("/stats").json
    assert stats["unique_users"] == expected.users
    assert stats["os_breakdown"] == {os_: n for os_, n in expected.users_by_os.items() if n}
    assert stats["version_breakdown"] == {v: n for v, n in expected.users_by_version.items() if n}
    assert stats["configs_created"] == expected.configs and stats["heartbeats"] == expected.heartbeats
    assert stats["total_deployments"] == sum(expected.deployments.values())
