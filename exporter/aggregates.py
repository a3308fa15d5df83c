"""The one read-side view of the store: every number /stats, /metrics and / show, folded once per snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from exporter.normalize import OTHER, UNKNOWN, canonical_version
from exporter.store import Snapshot, Store
from exporter.store.base import WINDOWS, DailyRow
from exporter.weeks import week_index, week_label

Labels = tuple[str, str, str]
_VERSIONED = frozenset({"users", "deployments", "configs", "heartbeats"})  # counter families keyed by version


def ratio(part: int, whole: int) -> float | None:
    """Return part/whole rounded to 4 places, or None when there is nothing to divide."""
    return round(part / whole, 4) if whole else None


def version_key(version: str) -> tuple[int, tuple[int, int, int, int, str], str]:
    """Order version labels by semver (pre-releases before their release); other labels last, by name."""
    if canonical_version(version) != version or version == UNKNOWN:
        return (1, (0, 0, 0, 0, ""), version)
    core, _, pre = version.partition("-")
    major, minor, patch = (int(part) for part in core.split("."))
    return (0, (major, minor, patch, 0 if pre else 1, pre), version)


def runs_per_active_user(day: DailyRow) -> float | None:
    """Return one day's CLI runs (heartbeats) per user active that day, or None without active users."""
    return ratio(day.heartbeats, day.active_users)


@dataclass(frozen=True)
class Cohort:
    """One weekly cohort: its users, and how many of them were active k weeks later (retained[0] == users)."""

    label: str
    users: int
    retained: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the cohort as /stats shows it."""
        return {"cohort": self.label, "users": self.users, "retained": list(self.retained)}


@dataclass(frozen=True)
class Retention:
    """Weekly cohort retention: the last cohorts, oldest first, each with a column per week begun."""

    period: str
    cohorts: tuple[Cohort, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the /stats `retention` document."""
        return {"period": self.period, "cohorts": [cohort.to_dict() for cohort in self.cohorts]}


def retention(
    cells: Mapping[tuple[int, int], int], now: float, max_cohorts: int, max_weeks: int
) -> Retention:
    """Return the cohorts of the last max_cohorts weeks up to now's week that have users, at most max_weeks each."""
    current = week_index(now)
    cohorts = []
    for cohort in range(current - max_cohorts + 1, current + 1):
        users = cells.get((cohort, 0), 0)
        if users <= 0:
            continue
        weeks = min(max_weeks, current - cohort + 1)
        cohorts.append(
            Cohort(week_label(cohort), users, tuple(cells.get((cohort, k), 0) for k in range(weeks)))
        )
    return Retention("week", tuple(cohorts))


def _frozen(counts: Mapping[str, int]) -> Mapping[str, int]:
    """Return a read-only copy of counts."""
    return MappingProxyType(dict(counts))


@dataclass(frozen=True)
class Aggregates:
    """The store's aggregates at one moment, folded once; counts of users unless named otherwise."""

    users_by_os: Mapping[str, int]
    users_by_version: Mapping[str, int]
    users_by_arch: Mapping[str, int]
    users_by_os_version: Mapping[tuple[str, str], int]
    unique_users: int
    deployments: Mapping[Labels, int]  # (os, version, outcome) -> deployments
    deployments_success: int
    deployments_failure: int
    configs: Mapping[Labels, int]  # (os, version, "") -> configs created
    configs_created: int
    heartbeats: Mapping[Labels, int]  # (os, version, arch) -> heartbeats
    heartbeats_total: int
    events_by_type: Mapping[str, int]
    total_events: int
    activated_users: int
    configured_users: int
    active: Mapping[str, int]  # window -> users seen within it, every window present
    active_by_version: Mapping[tuple[str, str], int]  # (window, version) -> users
    latest_version: str  # as configured (the raw label, e.g. "v1.3.5")
    latest: str  # canonical, as the version labels spell it
    users_on_latest: int
    now: float
    retention: Retention
    single_version: bool  # the fleet only ever reported one real version label, so "on latest" says little

    @property
    def total_deployments(self) -> int:
        """Return successful plus failed deployments."""
        return self.deployments_success + self.deployments_failure

    @property
    def success_rate(self) -> float | None:
        """Return successful / all deployments, or None without deployments."""
        return ratio(self.deployments_success, self.total_deployments)

    @property
    def activation_rate(self) -> float | None:
        """Return users with a deployment / all users, or None without users."""
        return ratio(self.activated_users, self.unique_users)

    @property
    def latest_share(self) -> float | None:
        """Return users on the latest release / all users, or None without users."""
        return ratio(self.users_on_latest, self.unique_users)

    @property
    def stickiness(self) -> float | None:
        """Return users active in 1d / users active in 30d, or None without users active in 30d."""
        return ratio(self.active["1d"], self.active["30d"])

    @property
    def is_empty(self) -> bool:
        """Return True until the store has counted any event or user."""
        return self.total_events == 0 and self.unique_users == 0


@dataclass(frozen=True)
class Folding:
    """How the read endpoints fold a snapshot: the latest release, and the retention table's bounds."""

    latest_version: str
    max_cohorts: int = 12
    max_weeks: int = 12

    def read(self, store: Store, now: float) -> Aggregates:
        """Read the store's snapshot as of now and fold it; raises StoreUnavailable."""
        return fold(
            store.snapshot(now),
            self.latest_version,
            now,
            max_cohorts=self.max_cohorts,
            max_weeks=self.max_weeks,
        )


def fold(
    snap: Snapshot, latest_version: str, now: float, *, max_cohorts: int = 12, max_weeks: int = 12
) -> Aggregates:
    """Fold one snapshot into the view in a single pass over its counters (cohorts bounded as given)."""
    by_os: dict[str, int] = {}
    by_version: dict[str, int] = {}
    by_arch: dict[str, int] = {}
    by_os_version: dict[tuple[str, str], int] = {}
    families: dict[str, dict[Labels, int]] = {"deployments": {}, "configs": {}, "heartbeats": {}}
    totals: dict[str, int] = {}
    events: dict[str, int] = {}
    flags: dict[str, int] = {}
    versions: set[str] = set()  # every version label reported, zero or not (counters of events never drop)
    for (name, a, b, c), value in snap.counters.items():
        totals[name] = totals.get(name, 0) + value
        if name in _VERSIONED:
            versions.add(b)
        if name == "users":  # the most numerous keys: two sums here, os and version from by_os_version below
            by_arch[c] = by_arch.get(c, 0) + value
            by_os_version[(a, b)] = by_os_version.get((a, b), 0) + value
        elif not value:
            continue  # the families below list non-zero series only, as Snapshot.family does
        elif name in families:
            families[name][(a, b, c)] = value
        elif name == "events":
            events[a] = events.get(a, 0) + value
        elif name == "user_flags":
            flags[a] = flags.get(a, 0) + value
    for (os_, version), value in by_os_version.items():
        by_os[os_] = by_os.get(os_, 0) + value
        by_version[version] = by_version.get(version, 0) + value
    deployments = families["deployments"]
    latest = canonical_version(latest_version)
    return Aggregates(
        users_by_os=_frozen(by_os),
        users_by_version=_frozen(by_version),
        users_by_arch=_frozen(by_arch),
        users_by_os_version=MappingProxyType(by_os_version),
        unique_users=sum(by_os.values()),
        deployments=MappingProxyType(deployments),
        deployments_success=sum(v for (_, _, outcome), v in deployments.items() if outcome == "success"),
        deployments_failure=sum(v for (_, _, outcome), v in deployments.items() if outcome == "failure"),
        configs=MappingProxyType(families["configs"]),
        configs_created=totals.get("configs", 0),
        heartbeats=MappingProxyType(families["heartbeats"]),
        heartbeats_total=totals.get("heartbeats", 0),
        events_by_type=_frozen(dict(sorted(events.items()))),
        total_events=totals.get("events", 0),
        activated_users=flags.get("activated", 0),
        configured_users=flags.get("configured", 0),
        active=_frozen({window: snap.active.get(window, 0) for window in WINDOWS}),
        active_by_version=MappingProxyType(dict(snap.active_by_version)),
        latest_version=latest_version,
        latest=latest,
        users_on_latest=by_version.get(latest, 0),
        now=now,
        retention=retention(snap.cohorts, now, max_cohorts, max_weeks),
        single_version=len(versions - {UNKNOWN, OTHER}) == 1,
    )


def positive(counts: Mapping[str, int]) -> dict[str, int]:
    """Return the non-zero counts, largest first (ties by name)."""
    return {key: value for key, value in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if value > 0}
