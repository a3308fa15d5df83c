"""The bulk histogram matches prometheus_client's; /metrics drops `_created`; rejections go through one method."""

from __future__ import annotations

import re
import threading

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from exporter.errors import REJECT_REASONS
from exporter.metrics import SKEW_BUCKETS, BulkHistogram, Metrics, WithoutCreated


def _exposition(registry: CollectorRegistry) -> list[str]:
    """The text exposition without the `_created` series (the bulk histogram has no creation time)."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_bulk_histogram_matches_the_client_library() -> None:
    values = [0.0, 0.5, 1.0, 1.0000001, 10.0, 59.9, 300.0, 86400.0, 2592000.0, 2592000.5, 1e12]
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("skew_seconds", "Skew.", buckets=SKEW_BUCKETS, registry=theirs)
    bulk = BulkHistogram("skew_seconds", "Skew.", SKEW_BUCKETS, ours)
    for value in values:
        reference.observe(value)
    bulk.observe_many(values[:4])
    bulk.observe_many([])
    for value in values[4:]:
        bulk.observe(value)
    assert _exposition(ours) == _exposition(theirs)


def test_bulk_histogram_loses_nothing_across_threads() -> None:
    registry = CollectorRegistry()
    bulk = BulkHistogram("skew_seconds", "Skew.", SKEW_BUCKETS, registry)
    threads = [
        threading.Thread(target=lambda: [bulk.observe_many([5.0] * 10) for _ in range(200)]) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert registry.get_sample_value("skew_seconds_count") == 8 * 200 * 10
    assert registry.get_sample_value("skew_seconds_bucket", {"le": "10.0"}) == 16000
    assert registry.get_sample_value("skew_seconds_bucket", {"le": "1.0"}) == 0


# ----- /metrics without `_created`, and the rejection choke point ------------------------------------


def _traffic(client) -> None:
    """A few events of every kind, so every family has samples."""
    from wire_samples import CONFIG_CREATED, DEPLOYMENT, HEADERS, HEARTBEAT

    for body in (HEARTBEAT, CONFIG_CREATED, DEPLOYMENT, b"{not json"):
        client.simulate_post("/v1/events", body=body, headers=HEADERS)


def _sample_names(text: str) -> set[str]:
    """Return every sample name of an exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


CREATED_SAMPLE = re.compile(r"^\w+_created(?:\{| )", re.MULTILINE)
# In the text format prometheus_client writes each `_created` as its own gauge, with HELP and TYPE lines.
CREATED_LINE = re.compile(r"^(?:# (?:HELP|TYPE) )?\w+_created(?:\{| )", re.MULTILINE)


@pytest.mark.parametrize("accept", ["text/plain", "application/openmetrics-text; version=1.0.0"])
def test_metrics_has_no_created_samples(client, accept: str) -> None:
    _traffic(client)
    client.simulate_get("/metrics")
    text = client.simulate_get("/metrics", headers={"Accept": accept}).text
    assert not CREATED_SAMPLE.findall(text), CREATED_SAMPLE.findall(text)
    assert "flakedrop_configs_created_total{" in text, "a family named *_created stays"
    assert "flakedrop_events_rejected_total{" in text and "flakedrop_http_requests_total{" in text


def test_without_created_changes_nothing_else(client, registry) -> None:
    _traffic(client)
    client.simulate_get("/metrics")
    full = generate_latest(registry).decode()
    assert CREATED_SAMPLE.search(full), "prometheus_client still adds _created; the filter has work to do"
    kept = [line for line in full.splitlines() if not CREATED_LINE.match(line)]
    assert generate_latest(WithoutCreated(registry)).decode().splitlines() == kept
    restricted = WithoutCreated(registry).restricted_registry(["flakedrop_events_rejected_total"])
    assert _sample_names(generate_latest(restricted).decode()) == {"flakedrop_events_rejected_total"}


def test_count_rejection_counts_known_reasons_and_refuses_others() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.count_rejection("invalid_json")
    metrics.count_rejection("rate_limited", 3)
    get = registry.get_sample_value
    assert get("flakedrop_events_rejected_total", {"reason": "invalid_json"}) == 1
    assert get("flakedrop_events_rejected_total", {"reason": "rate_limited"}) == 3
    with pytest.raises(ValueError, match="not_a_reason"):
        metrics.count_rejection("not_a_reason")
    assert get("flakedrop_events_rejected_total", {"reason": "not_a_reason"}) is None
    assert {r: get("flakedrop_events_rejected_total", {"reason": r}) for r in REJECT_REASONS} == {
        r: {"invalid_json": 1, "rate_limited": 3}.get(r, 0) for r in REJECT_REASONS
    }
