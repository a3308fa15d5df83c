"""The one aggregates view against a naive model: /stats and /metrics read the same numbers from it."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.aggregates import fold, ratio, version_key
from exporter.metrics import families
from exporter.stats import stats_document
from exporter.store import Snapshot

LABELS = st.sampled_from(["linux", "darwin", "1.3.0", "1.3.5", "v1.3.5", "unknown", "other", "amd64", ""])
FAMILY = st.sampled_from(["users", "deployments", "configs", "heartbeats", "events", "user_flags"])
OUTCOME = st.sampled_from(["success", "failure", "amd64", ""])
COUNTERS = st.dictionaries(st.tuples(FAMILY, LABELS, LABELS, OUTCOME), st.integers(0, 50), max_size=40)
FLAGS = st.dictionaries(st.sampled_from(["activated", "configured"]), st.integers(0, 50))
ACTIVE = st.dictionaries(st.sampled_from(["1d", "7d", "30d"]), st.integers(0, 50))
BY_VERSION = st.dictionaries(st.tuples(st.sampled_from(["1d", "7d", "30d"]), LABELS), st.integers(0, 50))
LATEST = st.sampled_from(["v1.3.5", "1.3.0", "nonsense"])


def snapshots() -> st.SearchStrategy[Snapshot]:
    """Random aggregates, flags stored as the store keeps them: ('user_flags', flag, '', '')."""
    return st.builds(
        lambda counters, flags, active, by_version: Snapshot(
            counters={k: v for k, v in counters.items() if k[0] != "user_flags"}
            | {("user_flags", flag, "", ""): n for flag, n in flags.items()},
            active=active,
            active_by_version=by_version,
        ),
        COUNTERS,
        FLAGS,
        ACTIVE,
        BY_VERSION,
    )


def model(snap: Snapshot, latest: str) -> dict[str, object]:
    """The documented meaning, computed the slow way, one family at a time."""
    users = snap.family("users")
    by_version: Counter[str] = Counter()
    for (_, version, _), n in users.items():
        by_version[version] += n
    deployments = snap.family("deployments")
    ok = sum(n for key, n in deployments.items() if key[2] == "success")
    bad = sum(n for key, n in deployments.items() if key[2] == "failure")
    unique = snap.total("users")
    activated = snap.counters.get(("user_flags", "activated", "", ""), 0)
    events: Counter[str] = Counter()
    for (kind, _, _), n in snap.family("events").items():
        events[kind] += n  # the store keys events (type, "", ""); a sum keeps any other key counted
    canonical = latest.lstrip("v") if latest != "nonsense" else "unknown"
    return {
        "unique_users": unique,
        "successful_deploys": ok,
        "failed_deploys": bad,
        "success_rate": round(ok / (ok + bad), 4) if ok + bad else None,
        "activation_rate": round(activated / unique, 4) if unique else None,
        "activated_users": activated,
        "configured_users": snap.counters.get(("user_flags", "configured", "", ""), 0),
        "users_on_latest": by_version[canonical],
        "version_breakdown": {v: n for v, n in by_version.items() if n},
        "events_by_type": dict(sorted(events.items())),
        "configs_created": snap.total("configs"),
        "heartbeats": snap.total("heartbeats"),
        "active_users": {w: snap.active.get(w, 0) for w in ("1d", "7d", "30d")},
    }


@given(snapshots(), LATEST)
def test_stats_follow_the_model(snap: Snapshot, latest: str) -> None:
    stats = stats_document(fold(snap, latest, 0.0), [])
    for key, want in model(snap, latest).items():
        got = stats[key]
        assert (dict(got) if isinstance(got, dict) else got) == want, key
    assert list(stats["version_breakdown"].values()) == sorted(
        stats["version_breakdown"].values(), reverse=True
    )


@given(snapshots(), LATEST)
def test_metrics_and_stats_read_the_same_view(snap: Snapshot, latest: str) -> None:
    view = fold(snap, latest, 0.0)
    stats = stats_document(view, [])
    registry = CollectorRegistry()

    class Once:
        def collect(self):  # type: ignore[no-untyped-def]
            return families(view, None)

    registry.register(Once())  # type: ignore[arg-type]
    get = registry.get_sample_value
    assert (
        sum(s.value for m in registry.collect() if m.name == "flakedrop_users" for s in m.samples)
        == (stats["unique_users"])
    )
    assert get("flakedrop_users_on_latest") == stats["users_on_latest"]
    assert get("flakedrop_activated_users") == stats["activated_users"]
    assert get("flakedrop_configured_users") == stats["configured_users"]
    for outcome, key in (("success", "successful_deploys"), ("failure", "failed_deploys")):
        total = sum(
            s.value
            for m in registry.collect()
            if m.name == "flakedrop_deployments"
            for s in m.samples
            if s.labels["outcome"] == outcome
        )
        assert total == stats[key]
    for kind, n in stats["events_by_type"].items():
        assert get("flakedrop_events_total", {"type": kind}) == n


def test_ratio_and_version_order() -> None:
    assert ratio(1, 3) == 0.3333 and ratio(0, 0) is None and ratio(5, 5) == 1.0
    labels = ["other", "1.2.0", "1.10.0", "1.10.0-rc.1", "unknown", "v1.9.0", "1.9.0"]
    assert sorted(labels, key=version_key) == [
        "1.2.0",
        "1.9.0",
        "1.10.0-rc.1",
        "1.10.0",
        "other",
        "unknown",
        "v1.9.0",
    ]
