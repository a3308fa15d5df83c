"""The bulk histogram exposes exactly what prometheus_client's Histogram does for the same values."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from exporter.metrics import SKEW_BUCKETS, BulkHistogram


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
