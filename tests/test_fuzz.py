"""Fuzzing: schemathesis against the live server, and hypothesis properties of normalization and ingest."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procs import Server, http
from prometheus_client import CollectorRegistry
from test_openapi import ecma_regex, spec

from exporter.app import create_app
from exporter.config import Config
from exporter.normalize import (
    EVENT_TYPES,
    GOARCH,
    GOOS,
    OTHER,
    UNKNOWN,
    Event,
    canonical_arch,
    canonical_os,
    canonical_version,
    normalize,
    parse_timestamp_ns,
)
from exporter.store.sqlite import SQLiteStore

TOKEN = "fuzz-read-token-0123456789"
KEY = "fuzz-key-0123456789abcdef"
JSON = {"Content-Type": "application/json"}
# schemathesis generates this many cases per operation and mode; ~2,000 requests in total, ~45 s here.
MAX_EXAMPLES = 600
SEED = 20261128
TS_PATTERN = spec()["components"]["schemas"]["Timestamp"]["pattern"]
SEMVER = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?")
# The checks schemathesis runs with `--checks all`; a 413 is a fine rejection of a schema-violating body.
SCHEMATHESIS_CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "413", "415"]
"""


@pytest.mark.slow
def test_schemathesis_against_the_live_server(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--read-token", TOKEN, "--channel-timeout", "5").wait_ready()
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    reports = tmp_path / "reports"
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(config),
                "run",
                str(Path(__file__).resolve().parent.parent / "exporter" / "openapi.json"),
                "--url",
                server.url,
                "--checks",
                "all",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                str(SEED),
                "--generation-database",
                "none",
                "--workers",
                "2",
                "--report",
                "har",
                "--report-dir",
                str(reports),
                "--no-color",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        metrics = http("GET", server.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})[1]
    finally:
        assert server.stop() == 0
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    (har,) = reports.glob("har-*.json")
    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = [entry["response"]["status"] for entry in entries]
    print(f"schemathesis: {len(statuses)} requests, {sum(s >= 500 for s in statuses)} 5xx")
    assert len(statuses) >= 1500, "the fuzzing did not get going"
    assert all(status < 500 for status in statuses)
    assert sum(entry["request"]["method"] == "POST" for entry in entries) >= 1000
    served_5xx = [
        line for line in metrics.decode().splitlines() if line.startswith("flakedrop_http_requests_total")
    ]
    assert served_5xx and not [line for line in served_5xx if 'code="5' in line]
    assert "Traceback" not in server.log_path.read_text()


# ---------------------------------------------------------------- normalization properties


@settings(max_examples=300)
@given(st.text(max_size=80) | st.from_regex(SEMVER, fullmatch=True).map(lambda v: "v" + v))
def test_canonical_labels_are_idempotent_and_bounded(value: str) -> None:
    version = canonical_version(value)
    assert canonical_version(version) == version
    assert version == UNKNOWN or SEMVER.fullmatch(version)
    assert canonical_os(canonical_os(value)) == canonical_os(value) in GOOS | {OTHER}
    assert canonical_arch(canonical_arch(value)) == canonical_arch(value) in GOARCH | {OTHER}


def _rfc3339(ns: int) -> str:
    """Format Unix nanoseconds as RFC 3339 UTC with nine fractional digits."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + f".{nanos:09d}Z"


HEX_ID = st.from_regex(r"[0-9a-fA-F]{16,64}", fullmatch=True)
EVENT_ID = st.none() | st.from_regex(r"[!-~]{1,128}", fullmatch=True)
LABEL = st.sampled_from(sorted(GOOS | GOARCH)) | st.text(max_size=20)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event in a random accepted shape."""
    kind = draw(st.sampled_from(sorted(EVENT_TYPES)))
    payload: dict[str, Any] = {
        "user_id": draw(HEX_ID),
        "version": draw(st.text(max_size=70) | st.just("v1.3.0")),
    }
    for name in ("os", "arch"):
        value = draw(st.none() | LABEL)
        if value is not None or draw(st.booleans()):
            payload[name] = value
    if draw(st.booleans()):
        payload["timestamp"] = _rfc3339(draw(st.integers(0, 253_402_300_799_999_999_999)))
    if kind == "deployment":
        payload["success"] = draw(st.booleans())
    event_id = draw(EVENT_ID)
    if event_id is not None:
        payload["id"] = event_id
    shape = draw(st.sampled_from(["flat", "single", "client"]))
    if shape == "flat":
        return {"type": kind, **payload}
    if shape == "single":
        return {"type": kind, "data": payload}
    return {"data": {"data": payload}, "type": kind}


def _reserialize(event: Event) -> dict[str, Any]:
    """Turn a normalized Event back into the flat form."""
    out: dict[str, Any] = {"type": event.type, "user_id": event.user_id, "version": event.version}
    for name in ("os", "arch", "success"):
        if getattr(event, name) is not None:
            out[name] = getattr(event, name)
    if event.client_time_ns is not None:
        out["timestamp"] = _rfc3339(event.client_time_ns)
    if event.event_id is not None:
        out["id"] = event.event_id
    return out


@settings(max_examples=300)
@given(valid_events())
def test_normalizing_a_reserialized_event_is_the_identity(obj: dict[str, Any]) -> None:
    event = normalize(obj)
    again = normalize(json.loads(json.dumps(_reserialize(event))))
    assert again == event
    assert normalize(_reserialize(again)) == again


@settings(max_examples=300)
@given(st.from_regex(ecma_regex(TS_PATTERN), fullmatch=True))
def test_every_timestamp_the_spec_allows_is_parsed(text: str) -> None:
    parse_timestamp_ns(text)


@st.composite
def near_timestamps(draw: st.DrawFn) -> str:
    """A valid-looking timestamp with one character changed, inserted or removed."""
    text = _rfc3339(draw(st.integers(-(10**19), 253_402_300_799_999_999_999)))
    text = draw(st.sampled_from([text, text.replace("Z", "+05:30"), text[:19] + "z", text.replace("T", " ")]))
    index = draw(st.integers(0, len(text)))
    char = draw(st.sampled_from("0123456789:-+.TtZz \n\u0663") | st.characters())
    edit = draw(st.sampled_from(["replace", "insert", "delete", "keep"]))
    if edit == "replace" and index < len(text):
        return text[:index] + char + text[index + 1 :]
    if edit == "insert":
        return text[:index] + char + text[index:]
    if edit == "delete":
        return text[:index] + text[index + 1 :]
    return text


@settings(max_examples=1000)
@given(near_timestamps() | st.text(max_size=40))
def test_the_spec_timestamp_pattern_is_exactly_what_the_server_accepts(text: str) -> None:
    try:
        parse_timestamp_ns(text)
        parsed = True
    except ValueError:
        parsed = False
    assert parsed == bool(ecma_regex(TS_PATTERN).search(text)), text


# ---------------------------------------------------------------- ingest properties (falcon.testing)


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[falcon.testing.TestClient]:
    """One app for the whole module (hypothesis reuses it across examples)."""
    root = tmp_path_factory.mktemp("fuzz")
    store = SQLiteStore(root / "telemetry.db")
    app = create_app(Config(data_dir=str(root), user_id_key=KEY), store=store, registry=CollectorRegistry())
    yield falcon.testing.TestClient(app)
    store.close()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25,
)
FIELDS = ["type", "user_id", "version", "os", "arch", "success", "timestamp", "id", "data", "events"]
EVENTISH = st.recursive(
    st.dictionaries(
        st.sampled_from(FIELDS),
        JSON_VALUES | st.sampled_from([*sorted(EVENT_TYPES), "0" * 32, "v1.3.0", "linux", True]),
        max_size=8,
    ),
    lambda inner: st.dictionaries(st.sampled_from(["data", "events"]), inner | st.lists(inner, max_size=3)),
    max_leaves=10,
)


def _check_reply(resp: falcon.testing.Result) -> None:
    """A reply is a 2xx, or a 4xx with a JSON body naming the problem; never a 5xx."""
    assert 200 <= resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.json["title"] and resp.json["description"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES | EVENTISH | valid_events() | st.lists(valid_events() | EVENTISH, max_size=4))
def test_any_json_value_gets_a_2xx_or_a_4xx(shared_client: falcon.testing.TestClient, value: Any) -> None:
    _check_reply(shared_client.simulate_post("/v1/events", body=json.dumps(value), headers=JSON))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, "gzip", "identity", "deflate"]))
def test_any_bytes_get_a_2xx_or_a_4xx(
    shared_client: falcon.testing.TestClient, body: bytes, encoding: str | None
) -> None:
    headers = {**JSON, **({"Content-Encoding": encoding} if encoding else {})}
    _check_reply(shared_client.simulate_post("/v1/events", body=body, headers=headers))


REPEATED = st.sampled_from([{"type": "heartbeat", "user_id": "a" * 32, "version": "1.0.0", "id": "same"}])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(valid_events() | REPEATED | EVENTISH, min_size=1, max_size=5), min_size=1, max_size=6)
)
def test_after_any_sequence_the_totals_equal_the_accepted_count(requests: list[list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = SQLiteStore(Path(root) / "telemetry.db")
        registry = CollectorRegistry()
        try:
            app = create_app(Config(data_dir=root, user_id_key=KEY), store=store, registry=registry)
            client = falcon.testing.TestClient(app)
            accepted = 0
            for items in requests:
                duplicates_before = registry.get_sample_value("flakedrop_events_duplicate_total") or 0.0
                if len(items) == 1:
                    resp = client.simulate_post("/v1/events", body=json.dumps(items[0]), headers=JSON)
                    _check_reply(resp)
                    duplicate = (
                        registry.get_sample_value("flakedrop_events_duplicate_total") != duplicates_before
                    )
                    accepted += resp.status_code == 200 and not duplicate
                else:
                    resp = client.simulate_post("/v1/events", body=json.dumps(items), headers=JSON)
                    _check_reply(resp)
                    accepted += resp.json["accepted"]
                    assert resp.json["accepted"] + resp.json["duplicates"] + len(
                        resp.json["rejected"]
                    ) == len(items)
            stats = client.simulate_get("/stats").json
            assert stats["total_events"] == accepted
            assert sum(stats["events_by_type"].values()) == accepted
            assert set(stats["events_by_type"]) <= EVENT_TYPES
        finally:
            store.close()
