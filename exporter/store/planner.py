"""The pure batch planner: a batch's effects on counters, user rows and rollups, computed in memory.

It knows the documented counting rules (README "What is counted") and nothing of SQL, threads or
processes: a backend reads the touched users' rows, calls plan_batch, and writes the Plan in the same
transaction.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from exporter.normalize import OTHER, UNKNOWN
from exporter.weeks import MAX_WEEKS, week_index

# A row of the `counters` table: (family, k1, k2, k3). Families and their key columns:
# deployments (os, version, outcome), configs (os, version, ""), heartbeats (os, version, arch),
# events (type, "", ""), users (os, version, arch) and user_flags (flag, "", "").
Key = tuple[str, str, str, str]
HourKey = tuple[int, str]  # (hour number, version) of the `hours` table
CohortKey = tuple[int, int]  # (cohort week index, weeks since it) of the `cohorts` table


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
    first_week is the ISO week index the server first saw the user in (their cohort); bit k of weeks is
    set when the user had an accepted event in week first_week + k (k < MAX_WEEKS), by server time.
    """

    first_seen: int
    last_seen: int
    os: str
    version: str
    arch: str
    configured: bool
    deployed: bool
    first_week: int
    weeks: int


@dataclass
class Plan:
    """The effects of a batch of records, computed in memory, written by a backend in one transaction."""

    counted: list[bool]
    overflow: Counter[str]
    users: dict[bytes, UserRow]
    counters: Counter[Key]
    hours: Counter[HourKey]
    daily: Counter[tuple[str, str, str]]
    new_versions: list[str]
    cohorts: Counter[CohortKey]


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
    plan = Plan([], Counter(), {}, Counter(), Counter(), Counter(), [], Counter())
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
        week = week_index(now)
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
                week,
                1,
            )
            daily[(day, "active", version)] += 1
            daily[(day, "new_users", version)] += 1
        else:
            user_os = rec.os or old.os
            since = week - old.first_week  # a clock moved back before the cohort, or 62+ weeks on: no bit
            bit = 1 << since if 0 <= since < MAX_WEEKS else 0
            if old.last_seen // 86400 != day_number or old.version != version:
                daily[(day, "active", version)] += 1
            unchanged = (  # the common repeat event within the hour leaves the user's row as it is
                old.last_seen >= seen
                and old.version == version
                and old.os == user_os
                and (rec.arch is None or rec.arch == old.arch)
                and (old.deployed or kind != "deployment")
                and (old.configured or kind != "config_created")
                and old.weeks & bit == bit
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
                    old.first_week,
                    old.weeks | bit,
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
            daily[(day, "heartbeats", version)] += 1
    for user, new in current.items():
        old = users.get(user)
        if old == new:
            continue
        plan.users[user] = new
        _move_user(plan, old, new)
    return plan


def _move_user(plan: Plan, old: UserRow | None, new: UserRow) -> None:
    """Record how one user's change moves the user gauges, hour buckets, flags and cohort cells."""
    gained = new.weeks & ~old.weeks if old is not None else new.weeks
    while gained:  # a bit per week newly active: usually none, at most one per event's week
        low = gained & -gained
        plan.cohorts[(new.first_week, low.bit_length() - 1)] += 1
        gained ^= low
    if old is not None:
        plan.counters[("users", old.os, old.version, old.arch)] -= 1
        plan.hours[(old.last_seen // 3600, old.version)] -= 1
    plan.counters[("users", new.os, new.version, new.arch)] += 1
    plan.hours[(new.last_seen // 3600, new.version)] += 1
    if new.deployed and not (old and old.deployed):
        plan.counters[("user_flags", "activated", "", "")] += 1
    if new.configured and not (old and old.configured):
        plan.counters[("user_flags", "configured", "", "")] += 1


def plan_removal(rows: Iterable[UserRow]) -> tuple[Counter[Key], Counter[HourKey]]:
    """Return the counter and hour-bucket deltas that forget these users (aggregates of events stay).

    The cohort cells stay too: like the daily rollups they record what happened in past weeks, so a
    cohort's row never shrinks when its inactive users are pruned (README "What is stored").
    """
    counters: Counter[Key] = Counter()
    hours: Counter[HourKey] = Counter()
    for row in rows:
        counters[("users", row.os, row.version, row.arch)] -= 1
        hours[(row.last_seen // 3600, row.version)] -= 1
        if row.deployed:
            counters[("user_flags", "activated", "", "")] -= 1
        if row.configured:
            counters[("user_flags", "configured", "", "")] -= 1
    return counters, hours
