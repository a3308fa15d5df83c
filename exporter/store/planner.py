"""The Store contract, the records it takes, the aggregates it returns, and the backend-neutral batch plan."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from exporter.normalize import OTHER, UNKNOWN

SCHEMA_VERSION = 2
WINDOWS = {"1d": 24, "7d": 24 * 7, "30d": 24 * 30}  # window label -> hours
# Counter families kept in the `counters` table, with the labels of their three key columns.
FAMILIES = {
    "deployments": ("os", "version", "outcome"),
    "configs": ("os", "version", ""),
    "heartbeats": ("os", "version", "arch"),
    "events": ("type", "", ""),
    "users": ("os", "version", "arch"),
    "user_flags": ("flag", "", ""),
}
Key = tuple[str, str, str, str]  # family, k1, k2, k3


class Record(NamedTuple):
    """One event ready to store: the user id is already a keyed hash, every label is normalized."""

    user: bytes
    type: str
    version: str
    os: str | None
    arch: str | None
    success: bool | None
    received_at: float
    dedup_key: bytes | None = None


class UserRow(NamedTuple):
    """What the store keeps about one user: no identifier as received, no IP, no free text.

    last_seen is kept to the hour: it is all the active-user windows need, it reveals less, and a
    user's row is not rewritten by every event in the same hour (most events then write no user row).
    """

    first_seen: int
    last_seen: int
    os: str
    version: str
    arch: str
    configured: bool
    deployed: bool


@dataclass
class WriteResult:
    """Per record: True when counted, False when it was a duplicate; plus label overflows."""

    counted: list[bool]
    overflow: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class DailyRow:
    """One day of rollups."""

    day: str
    deployments_success: int
    deployments_failure: int
    configs: int
    new_users: int
    active_by_version: dict[str, int]


@dataclass(frozen=True)
class Snapshot:
    """The store's aggregates at one moment: everything /metrics, /stats and / need, with no user scan."""

    counters: dict[Key, int]
    active: dict[str, int]
    active_by_version: dict[tuple[str, str], int]

    def family(self, name: str) -> dict[tuple[str, str, str], int]:
        """Return one counter family keyed by its three label values."""
        return {key[1:]: value for key, value in self.counters.items() if key[0] == name and value}

    def total(self, name: str) -> int:
        """Return the sum of one family."""
        return sum(value for key, value in self.counters.items() if key[0] == name)


class Store(Protocol):
    """A durable event store. Every method is thread-safe unless it says otherwise.

    write(): applies the records' effects in one transaction shared with concurrent callers (group
    commit); when it returns, they are committed and survive kill -9. Raises StoreUnavailable when
    the store cannot commit; then nothing of the call was applied.
    snapshot(): the current aggregates; never scans per-user rows. Raises StoreUnavailable.
    daily(): the last `days` days of rollups, oldest first.
    ready(): True when the store can take writes now (cheap; used by /readyz).
    prune(): deletes per-user rows not seen since `before`, keeping every aggregate; returns the count.
    close(): flushes pending writes and releases connections; the store is unusable afterwards.
    """

    def write(self, records: Sequence[Record]) -> WriteResult:
        """Apply and commit records; durable at return."""
        ...

    def announce(self) -> None:
        """Hint that a request with records is on its way (group commit may wait briefly for it)."""
        ...

    def withdraw(self) -> None:
        """End an announce(): the request's records are ready, or it has none."""
        ...

    def snapshot(self, now: float) -> Snapshot:
        """Return the aggregates as of now."""
        ...

    def daily(self, days: int, now: float) -> list[DailyRow]:
        """Return daily rollups for the last days."""
        ...

    def observe_commits(self, callback: Callable[[int, float], None]) -> None:
        """Register a callback run after each group commit with (records, seconds)."""
        ...

    def key_fingerprint(self, fingerprint: str) -> str:
        """Store the user-id key fingerprint once; return the stored one."""
        ...

    def ready(self) -> bool:
        """Return whether the store can take writes."""
        ...

    def prune(self, before: float) -> int:
        """Delete users inactive since before; return how many."""
        ...

    def close(self) -> None:
        """Flush and release everything."""
        ...


@dataclass
class Plan:
    """The effects of a batch of records, computed in memory, written by a backend in one transaction."""

    counted: list[bool]
    overflow: Counter[str]
    users: dict[bytes, UserRow]
    counters: Counter[Key]
    hours: Counter[tuple[int, str]]
    daily: Counter[tuple[str, str, str]]
    dedup: list[tuple[bytes, int]]
    new_versions: list[str]


def dedup_stamp(ns: int) -> bytes:
    """Return the 8-byte, order-preserving prefix of a dedup key: the client's time in nanoseconds."""
    return min(max(ns, 0), 2**64 - 1).to_bytes(8, "big")


def day_of(ts: float) -> str:
    """Return the UTC day of a Unix time as YYYY-MM-DD."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def plan_batch(
    records: Sequence[Record],
    users: dict[bytes, UserRow],
    seen_keys: set[bytes],
    known_versions: set[str],
    max_versions: int,
) -> Plan:
    """Compute a batch's effects from the touched users' current rows; mutates known_versions only."""
    plan = Plan([], Counter(), {}, Counter(), Counter(), Counter(), [], [])
    counted, counters, daily, overflow = plan.counted, plan.counters, plan.daily, plan.overflow
    current = dict(users)
    batch_keys: set[bytes] = set()
    day_names: dict[int, str] = {}
    for rec in records:
        key = rec.dedup_key
        if key is not None:
            if key in seen_keys or key in batch_keys:
                counted.append(False)
                continue
            batch_keys.add(key)
            plan.dedup.append((key, int(rec.received_at)))
        counted.append(True)
        version = rec.version
        if version not in known_versions and version not in (UNKNOWN, OTHER):
            if len(known_versions) < max_versions:
                known_versions.add(version)
                plan.new_versions.append(version)
            else:
                version = OTHER
                overflow["version"] += 1
        if rec.os == OTHER:
            overflow["os"] += 1
        if rec.arch == OTHER:
            overflow["arch"] += 1
        now = int(rec.received_at)
        seen = now - now % 3600
        day_number = now // 86400
        day = day_names.get(day_number)
        if day is None:
            day = day_names[day_number] = day_of(now)
        old = current.get(rec.user)
        kind = rec.type
        if old is None:
            user_os = rec.os or UNKNOWN
            current[rec.user] = UserRow(
                now,
                seen,
                user_os,
                version,
                rec.arch or UNKNOWN,
                kind == "config_created",
                kind == "deployment",
            )
            daily[(day, "active", version)] += 1
            daily[(day, "new_users", version)] += 1
        else:
            user_os = rec.os or old.os
            if old.last_seen // 86400 != day_number or old.version != version:
                daily[(day, "active", version)] += 1
            unchanged = (  # the common repeat event within the hour leaves the user's row as it is
                old.last_seen >= seen
                and old.version == version
                and old.os == user_os
                and (rec.arch is None or rec.arch == old.arch)
                and (old.deployed or kind != "deployment")
                and (old.configured or kind != "config_created")
            )
            if not unchanged:
                current[rec.user] = UserRow(
                    old.first_seen,
                    max(seen, old.last_seen),
                    user_os,
                    version,
                    rec.arch or old.arch,
                    bool(old.configured) or kind == "config_created",
                    bool(old.deployed) or kind == "deployment",
                )
        counters[("events", kind, "", "")] += 1
        if kind == "deployment":
            outcome = "success" if rec.success else "failure"
            counters[("deployments", user_os, version, outcome)] += 1
            daily[(day, "deployments_" + outcome, version)] += 1
        elif kind == "config_created":
            counters[("configs", user_os, version, "")] += 1
            daily[(day, "configs", version)] += 1
        elif kind == "heartbeat":
            counters[("heartbeats", rec.os or UNKNOWN, version, rec.arch or UNKNOWN)] += 1
    for user, new in current.items():
        old = users.get(user)
        if old == new:
            continue
        plan.users[user] = new
        _move_user(plan, old, new)
    return plan


def _move_user(plan: Plan, old: UserRow | None, new: UserRow) -> None:
    """Record how one user's change moves the user gauges, hour buckets and flags."""
    if old is not None:
        plan.counters[("users", old.os, old.version, old.arch)] -= 1
        plan.hours[(old.last_seen // 3600, old.version)] -= 1
    plan.counters[("users", new.os, new.version, new.arch)] += 1
    plan.hours[(new.last_seen // 3600, new.version)] += 1
    if new.deployed and not (old and old.deployed):
        plan.counters[("user_flags", "activated", "", "")] += 1
    if new.configured and not (old and old.configured):
        plan.counters[("user_flags", "configured", "", "")] += 1


def plan_removal(rows: Iterable[UserRow]) -> tuple[Counter[Key], Counter[tuple[int, str]]]:
    """Return the counter and hour-bucket deltas that forget these users (aggregates of events stay)."""
    counters: Counter[Key] = Counter()
    hours: Counter[tuple[int, str]] = Counter()
    for row in rows:
        counters[("users", row.os, row.version, row.arch)] -= 1
        hours[(row.last_seen // 3600, row.version)] -= 1
        if row.deployed:
            counters[("user_flags", "activated", "", "")] -= 1
        if row.configured:
            counters[("user_flags", "configured", "", "")] -= 1
    return counters, hours


def active_counts(version_rows: Iterable[Sequence]) -> tuple[dict[str, int], dict]:
    """Fold rows of (version, users active in each window, in WINDOWS order) into totals and by version."""
    active = dict.fromkeys(WINDOWS, 0)
    by_version: dict[tuple[str, str], int] = {}
    for version, *sums in version_rows:
        for window, users in zip(WINDOWS, sums, strict=True):
            users = int(users or 0)
            if users:
                active[window] += users
                by_version[(window, version)] = by_version.get((window, version), 0) + users
    return active, by_version
