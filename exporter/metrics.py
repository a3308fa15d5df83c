"""Prometheus metrics: this process's own instruments, and a collector for the store-backed families."""

from __future__ import annotations

import bisect
import copy
import logging
import platform
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.aggregates import Aggregates, Folding, Labels
from exporter.errors import REJECT_REASONS, StoreUnavailable
from exporter.store import Store

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SKEW_BUCKETS = (1, 10, 60, 300, 3600, 21600, 86400, 604800, 2592000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
OVERFLOW_LABELS = ("version", "os", "arch")
_HAS_CREATED = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


class Metrics:
    """This process's instruments, registered in one registry (tests pass a fresh one each)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.rejected = Counter(
            "flakedrop_events_rejected",
            "Events or requests rejected, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.duplicates = Counter(
            "flakedrop_events_duplicate",
            "Events acknowledged but not counted again (dedup).",
            registry=registry,
        )
        self.overflow = Counter(
            "flakedrop_label_overflow",
            "Label values folded into 'other' by an allowlist or cardinality cap, by label.",
            ["label"],
            registry=registry,
        )
        for label in OVERFLOW_LABELS:
            self.overflow.labels(label)
        self.requests = Counter(
            "flakedrop_http_requests", "HTTP requests served.", ["route", "method", "code"], registry=registry
        )
        self.latency = Histogram(
            "flakedrop_http_request_duration_seconds",
            "Time to serve an HTTP request, in seconds.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.clock_skew = BulkHistogram(
            "flakedrop_client_clock_skew_seconds",
            "Absolute difference between an event's client timestamp and its receive time, in seconds.",
            SKEW_BUCKETS,
            registry,
        )
        self.commit_size = Histogram(
            "flakedrop_store_commit_batch_size",
            "Events committed per group commit.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.commit_duration = Histogram(
            "flakedrop_store_commit_duration_seconds",
            "Time to apply and commit one group commit, in seconds.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.store_errors = Counter(
            "flakedrop_store_errors", "Store operations that failed, by operation.", ["op"], registry=registry
        )
        for op in ("write", "read"):
            self.store_errors.labels(op)
        self.store_ready = Gauge(
            "flakedrop_store_ready", "1 when the store can take writes, else 0.", registry=registry
        )
        build = Gauge(
            "flakedrop_build_info",
            "Build information; the value is always 1.",
            ["version", "python_version"],
            registry=registry,
        )
        build.labels(__version__, platform.python_version()).set(1)

    def count_rejection(self, reason: str, n: int = 1) -> None:
        """Count n events or requests rejected for reason: the one place every rejection is counted."""
        if reason not in REJECT_REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}; add it to errors.REJECT_REASONS")
        self.rejected.labels(reason).inc(n)

    def observe_commit(self, count: int, seconds: float) -> None:
        """Record one group commit (the store calls this)."""
        self.commit_size.observe(count)
        self.commit_duration.observe(seconds)


class WithoutCreated(Collector):
    """A registry's view without the `*_created` samples (noise to Prometheus), for exposition only.

    prometheus_client's switch, disable_created_metrics(), is process-global; this filter keeps the
    choice per registry, so a test's or an embedder's other registries are untouched.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        """Yield the registry's metrics, dropping each counter's, histogram's and summary's `_created`."""
        for metric in self.registry.collect():
            created = metric.name + "_created"
            if metric.type in _HAS_CREATED and any(sample.name == created for sample in metric.samples):
                metric = copy.copy(metric)
                metric.samples = [sample for sample in metric.samples if sample.name != created]
            yield metric

    def restricted_registry(self, names: Iterable[str]) -> WithoutCreated:
        """Return the same filter over the registry restricted to names (`?name[]=` scrapes)."""
        return WithoutCreated(self.registry.restricted_registry(names))  # type: ignore[arg-type]


class BulkHistogram(Collector):
    """A label-less histogram that takes a request's observations at once: one lock, C-level bisect.

    prometheus_client's Histogram takes a lock and scans its buckets per observation; a 100-event
    batch made that ~9% of the request's CPU. The exposition is the same (cumulative `le` buckets,
    `_sum`, `_count`).
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry):
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(bound) for bound in buckets)
        self._counts = [0] * (len(self.bounds) + 1)  # the last slot is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        """Add every value to the histogram."""
        counts = [0] * len(self._counts)
        total = 0.0
        for value in values:
            counts[bisect.bisect_left(self.bounds, value)] += 1
            total += value
        with self._lock:
            self._counts = [mine + theirs for mine, theirs in zip(self._counts, counts, strict=True)]
            self._sum += total

    def observe(self, value: float) -> None:
        """Add one value."""
        self.observe_many((value,))

    def collect(self) -> Iterator[Metric]:
        """Yield the histogram with cumulative buckets."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


class StoreCollector(Collector):
    """Yields the store-backed families at scrape time, from one aggregates view per scrape."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float],
        folding: Folding,
        latest_release_ts: float | None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.folding = folding
        self.latest_release_ts = latest_release_ts
        self.on_error = on_error

    def collect(self) -> Iterator[Metric]:
        """Read one snapshot, fold it once, and yield every store-backed family from the view."""
        try:
            view = self.folding.read(self.store, self.clock())
        except StoreUnavailable:
            if self.on_error is not None:
                self.on_error()
            log.warning("store unavailable during scrape; store-backed families omitted")
            return
        yield from families(view, self.latest_release_ts)


def _counter(name: str, documentation: str, labels: list[str], series: Mapping[Labels, int]) -> Metric:
    """Return a counter family with one sample per series, labelled by the first len(labels) values."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(series.items()):
        family.add_metric(list(key[: len(labels)]), value)
    return family


def families(view: Aggregates, release_ts: float | None) -> Iterator[Metric]:
    """Build the store-backed metric families from one aggregates view."""
    yield _counter(
        "flakedrop_deployments",
        "Real deployments reported by clients.",
        ["os", "version", "outcome"],
        view.deployments,
    )
    yield _counter(
        "flakedrop_configs_created",
        "Configs created (FlakeDrop setup runs).",
        ["os", "version"],
        view.configs,
    )
    yield _counter(
        "flakedrop_heartbeats",
        "Daily heartbeats from installations.",
        ["os", "version", "arch"],
        view.heartbeats,
    )
    events = CounterMetricFamily("flakedrop_events", "Events accepted, by type.", labels=["type"])
    for kind, value in view.events_by_type.items():
        events.add_metric([kind], value)
    yield events

    users = GaugeMetricFamily(
        "flakedrop_users",
        "Users by their last seen os and version; the sum is the unique users.",
        labels=["os", "version"],
    )
    for (os_, version), value in sorted(view.users_by_os_version.items()):
        if value:
            users.add_metric([os_, version], value)
    yield users

    active = GaugeMetricFamily("flakedrop_active_users", "Users seen within the window.", labels=["window"])
    for window, value in view.active.items():
        active.add_metric([window], value)
    yield active

    active_by_version = GaugeMetricFamily(
        "flakedrop_active_users_by_version",
        "Users seen within the window, by their last seen version.",
        labels=["window", "version"],
    )
    for (window, version), value in sorted(view.active_by_version.items()):
        active_by_version.add_metric([window, version], value)
    yield active_by_version

    yield GaugeMetricFamily(
        "flakedrop_activated_users", "Users with at least one real deployment.", value=view.activated_users
    )
    yield GaugeMetricFamily(
        "flakedrop_configured_users", "Users who created a config.", value=view.configured_users
    )
    yield GaugeMetricFamily(
        "flakedrop_users_on_latest",
        "Users whose last seen version is the latest release.",
        value=view.users_on_latest,
    )
    info = GaugeMetricFamily(
        "flakedrop_latest_version_info",
        "The configured latest release; the value is always 1.",
        labels=["version"],
    )
    info.add_metric([view.latest], 1)
    yield info
    yield from cohort_families(view)
    if release_ts is not None:
        yield GaugeMetricFamily(
            "flakedrop_latest_release_timestamp_seconds",
            "Release date of the latest release, as a Unix time in seconds.",
            value=release_ts,
        )


def cohort_families(view: Aggregates) -> Iterator[Metric]:
    """Build the two retention gauges: at most max_cohorts x max_weeks series, as fold() bounded them."""
    users = GaugeMetricFamily(
        "flakedrop_cohort_users", "Users first seen in the ISO week (server time).", labels=["cohort"]
    )
    retained = GaugeMetricFamily(
        "flakedrop_cohort_retained_users",
        "Users of the weekly cohort with an accepted event weeks_since weeks later (0: the cohort's size).",
        labels=["cohort", "weeks_since"],
    )
    for cohort in view.retention.cohorts:
        users.add_metric([cohort.label], cohort.users)
        for weeks_since, value in enumerate(cohort.retained):
            retained.add_metric([cohort.label, str(weeks_since)], value)
    yield users
    yield retained
