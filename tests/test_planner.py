"""The batch planner against a naive model of the documented counting rules (README: API, Metrics, Store).

The machine feeds plan_batch random batches and folds each plan back the way the SQL layer does (user
rows replaced, counter and hour deltas added, dedup keys and admitted versions remembered). A model that
keeps every user's last seen labels and flags, in the plainest way, must agree with the folded state.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from exporter.store.planner import CohortKey, Key, Record, UserRow, day_of, plan_batch, plan_removal
from exporter.weeks import MAX_WEEKS, week_index

NOW = 1_795_860_000
LATEST = "1.3.0"
TYPES = ("heartbeat", "deployment", "config_created", "feature_used")
VERSIONS = ("1.0.0", "1.2.0", LATEST, "2.0.0", "unknown")
OSES = ("linux", "darwin", "other", None)
ARCHES = ("amd64", "arm64", "other", None)
KEYS = tuple(bytes([n]) * 16 for n in range(6))


@dataclass
class ModelUser:
    """What the documentation says the store knows about one user."""

    os: str
    version: str
    arch: str
    last_hour: int
    first_week: int  # the server week of the user's first counted event (their cohort)
    configured: bool = False
    deployed: bool = False
    weeks: set[int] = field(default_factory=set)  # server weeks with a counted event

    def cells(self) -> set[CohortKey]:
        """Return the (cohort, weeks since) cells this user counts in: weeks since 0 .. MAX_WEEKS - 1."""
        return {
            (self.first_week, w - self.first_week) for w in self.weeks if 0 <= w - self.first_week < MAX_WEEKS
        }


records = st.builds(
    lambda user, kind, version, os, arch, success, offset, key: Record(
        bytes([user]) * 16, kind, version, os, arch, success if kind == "deployment" else None, offset, key
    ),
    st.integers(0, 5),
    st.sampled_from(TYPES),
    st.sampled_from(VERSIONS),
    st.sampled_from(OSES),
    st.sampled_from(ARCHES),
    st.booleans(),
    st.integers(0, 7200),
    st.one_of(st.none(), st.sampled_from(KEYS)),
)


class PlannerMachine(RuleBasedStateMachine):
    """Planner state folded from plans, next to a model updated one event at a time."""

    @initialize(cap=st.integers(1, 4))
    def start(self, cap: int) -> None:
        """Begin with an empty store and a version cap."""
        self.cap = cap
        self.now = NOW
        # the planner side, as the SQL layer keeps it
        self.rows: dict[bytes, UserRow] = {}
        self.counters: Counter[Key] = Counter()
        self.hours: Counter[tuple[int, str]] = Counter()
        self.daily: Counter[tuple[str, str, str]] = Counter()
        self.cohorts: Counter[CohortKey] = Counter()
        self.stored_keys: set[bytes] = set()
        self.versions: set[str] = set()
        self.duplicates = 0
        self.overflow: Counter[str] = Counter()
        # the model
        self.users: dict[bytes, ModelUser] = {}
        self.seen_keys: set[bytes] = set()
        self.admitted: set[str] = set()
        self.resends = 0
        self.folded = 0
        self.families: Counter[Key] = Counter()
        self.new_by_day: Counter[str] = Counter()
        self.heartbeats_by_day: Counter[str] = Counter()
        self.pruned: list[ModelUser] = []  # pruned users keep their cohort cells (like the daily rollups)

    @rule(seconds=st.integers(0, 3 * 86400))
    def advance(self, seconds: int) -> None:
        """Let time pass."""
        self.now += seconds

    @rule(weeks=st.integers(1, 70))
    def skip_weeks(self, weeks: int) -> None:
        """Let weeks pass, up to beyond the bitmap's 62 weeks."""
        self.now += weeks * 7 * 86400

    @rule(batch=st.lists(records, min_size=1, max_size=12))
    def write(self, batch: list[Record]) -> None:
        """Plan a batch and fold it in; replay it through the model."""
        batch = [rec._replace(received_at=float(self.now + int(rec.received_at))) for rec in batch]
        keys = {rec.dedup_key for rec in batch if rec.dedup_key is not None}
        touched = {rec.user: self.rows[rec.user] for rec in batch if rec.user in self.rows}
        plan = plan_batch(batch, touched, keys & self.stored_keys, self.versions, self.cap)
        assert len(plan.counted) == len(batch)
        for user, row in plan.users.items():
            self.rows[user] = row
        self.counters.update(plan.counters)
        self.hours.update(plan.hours)
        self.daily.update(plan.daily)
        self.cohorts.update(plan.cohorts)
        self.stored_keys.update(
            rec.dedup_key for rec, ok in zip(batch, plan.counted, strict=True) if ok and rec.dedup_key
        )
        self.duplicates += plan.counted.count(False)
        self.overflow.update(plan.overflow)
        for rec, counted in zip(batch, plan.counted, strict=True):
            assert counted == self.model_event(rec), rec

    def model_event(self, rec: Record) -> bool:
        """Apply one event as documented; return whether it counts (False: a resend within the window)."""
        if rec.dedup_key is not None:
            if rec.dedup_key in self.seen_keys:
                self.resends += 1
                return False
            self.seen_keys.add(rec.dedup_key)
        version = rec.version
        if version not in ("unknown", "other") and version not in self.admitted:
            if len(self.admitted) < self.cap:
                self.admitted.add(version)
            else:
                version = "other"
                self.folded += 1
        hour = int(rec.received_at) // 3600
        user = self.users.get(rec.user)
        if user is None:
            week = week_index(rec.received_at)
            user = self.users[rec.user] = ModelUser(
                rec.os or "unknown", version, rec.arch or "unknown", hour, week
            )
            self.new_by_day[day_of(rec.received_at)] += 1
        user.weeks.add(week_index(rec.received_at))
        user.os = rec.os or user.os
        user.arch = rec.arch or user.arch
        user.version = version
        user.last_hour = max(user.last_hour, hour)
        user.configured |= rec.type == "config_created"
        user.deployed |= rec.type == "deployment"
        self.families[("events", rec.type, "", "")] += 1
        if rec.type == "deployment":
            outcome = "success" if rec.success else "failure"
            self.families[("deployments", user.os, version, outcome)] += 1
        elif rec.type == "config_created":
            self.families[("configs", user.os, version, "")] += 1
        elif rec.type == "heartbeat":
            self.families[("heartbeats", rec.os or "unknown", version, rec.arch or "unknown")] += 1
            self.heartbeats_by_day[day_of(rec.received_at)] += 1
        return True

    @precondition(lambda self: self.users)
    @rule(days=st.integers(0, 10))
    def prune(self, days: int) -> None:
        """Forget users not seen for `days` days, as retention does; event counters stay."""
        before_hour = self.now // 3600 - 24 * days
        gone = [user for user, model in self.users.items() if model.last_hour < before_hour]
        counters, hours = plan_removal(self.rows.pop(user) for user in gone)
        self.counters.update(counters)
        self.hours.update(hours)
        for user in gone:
            self.pruned.append(self.users.pop(user))

    def gauge(self, family: str) -> Counter[tuple[str, str, str]]:
        """Return one family of the folded counters, without zero entries."""
        return Counter({key[1:]: value for key, value in self.counters.items() if key[0] == family and value})

    @invariant()
    def users_by_last_seen_labels_sum_to_unique_users(self) -> None:
        """flakedrop_users by os/version/arch is the model's users by their last seen labels."""
        expected = Counter((u.os, u.version, u.arch) for u in self.users.values())
        assert self.gauge("users") == expected
        assert sum(self.gauge("users").values()) == len(self.users)

    @invariant()
    def flags_count_users_once(self) -> None:
        """Activated users made a deployment, configured users created a config: each user once."""
        flags = self.gauge("user_flags")
        assert flags[("activated", "", "")] == sum(u.deployed for u in self.users.values())
        assert flags[("configured", "", "")] == sum(u.configured for u in self.users.values())

    @invariant()
    def duplicates_are_the_resends(self) -> None:
        """Every resend of a key within the window, and only those, is a duplicate."""
        assert self.duplicates == self.resends

    @invariant()
    def on_latest_is_users_whose_last_version_is_latest(self) -> None:
        """flakedrop_users_on_latest: the users whose last seen version is the latest release."""
        on_latest = sum(value for (_, version, _), value in self.gauge("users").items() if version == LATEST)
        assert on_latest == sum(u.version == LATEST for u in self.users.values())

    @invariant()
    def event_families_match(self) -> None:
        """Events, deployments, configs and heartbeats are counted per event, by the documented labels."""
        for family in ("events", "deployments", "configs", "heartbeats"):
            expected = Counter({key[1:]: n for key, n in self.families.items() if key[0] == family})
            assert self.gauge(family) == expected, family

    @invariant()
    def versions_cap_folds_into_other(self) -> None:
        """At most `cap` versions are admitted; every event over the cap is an overflow."""
        assert self.versions == self.admitted and len(self.versions) <= self.cap
        assert self.overflow["version"] == self.folded

    @invariant()
    def hour_buckets_hold_each_user_once(self) -> None:
        """The active-user windows count each user once, at its last seen hour and version."""
        buckets = Counter({key: value for key, value in self.hours.items() if value})
        assert buckets == Counter((u.last_hour, u.version) for u in self.users.values())

    @invariant()
    def daily_rollups_add_up(self) -> None:
        """New users per day are first sightings; daily deployments add up to the deployment counters."""
        new: Counter[str] = Counter()
        for (day, metric, _), n in self.daily.items():
            if metric == "new_users":
                new[day] += n
        assert +new == self.new_by_day
        for outcome in ("success", "failure"):
            daily = sum(n for (_, metric, _), n in self.daily.items() if metric == f"deployments_{outcome}")
            total = sum(
                n
                for (family, *_, last), n in self.families.items()
                if family == "deployments" and last == outcome
            )
            assert daily == total

    @invariant()
    def cohort_cells_count_each_users_weeks_once(self) -> None:
        """Cell (c, k): users first seen in week c with an event in week c + k, pruned users included."""
        expected: Counter[CohortKey] = Counter()
        for user in (*self.users.values(), *self.pruned):
            expected.update(user.cells())
        assert +self.cohorts == expected
        assert all(value > 0 for value in self.cohorts.values()), "cells only ever grow"

    @invariant()
    def cohort_size_is_its_first_sightings(self) -> None:
        """retained[0] is the cohort's size: every user counts in week 0 of exactly one cohort."""
        sizes = Counter({cohort: n for (cohort, k), n in self.cohorts.items() if k == 0})
        assert sizes == Counter(u.first_week for u in (*self.users.values(), *self.pruned))
        for (cohort, _), n in self.cohorts.items():
            assert n <= sizes[cohort], "no week retains more users than the cohort has"

    @invariant()
    def rows_hold_the_weeks_bitmap(self) -> None:
        """A user row's first_week and weeks bitmap are the model user's cohort and active weeks."""
        for user, model in self.users.items():
            row = self.rows[user]
            bits = {k for k in range(MAX_WEEKS) if row.weeks >> k & 1}
            assert (row.first_week, bits) == (model.first_week, {k for _, k in model.cells()})
            assert row.weeks < 1 << MAX_WEEKS

    @invariant()
    def daily_heartbeats_are_the_runs(self) -> None:
        """The daily heartbeats rollup counts every counted heartbeat on its UTC day."""
        runs: Counter[str] = Counter()
        for (day, metric, _), n in self.daily.items():
            if metric == "heartbeats":
                runs[day] += n
        assert runs == self.heartbeats_by_day


TestPlanner = PlannerMachine.TestCase
TestPlanner.settings = settings(
    max_examples=settings.default.max_examples * 3 // 2,  # 150 normally; fewer under `make mutation`
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_repeat_events_in_one_hour_leave_the_user_row_alone() -> None:
    hour = NOW - NOW % 3600
    first = Record(b"u" * 16, "heartbeat", LATEST, "linux", "amd64", None, hour + 10)
    plan = plan_batch([first], {}, set(), set(), 10)
    row = plan.users[b"u" * 16]
    again = plan_batch([first._replace(received_at=hour + 3000)], {b"u" * 16: row}, set(), {LATEST}, 10)
    assert again.users == {} and not again.hours, "the same hour writes no user row"
    later = plan_batch([first._replace(received_at=hour + 3600)], {b"u" * 16: row}, set(), {LATEST}, 10)
    assert list(later.users) == [b"u" * 16], "the next hour moves it"


def test_a_new_week_sets_one_bit_and_one_cell() -> None:
    """The first event of a later week moves the row and adds one cohort cell; the rest of that week, none."""
    start = NOW - NOW % (7 * 86400)
    first = Record(b"u" * 16, "heartbeat", LATEST, "linux", "amd64", None, start)
    row = plan_batch([first], {}, set(), set(), 10).users[b"u" * 16]
    week = week_index(start)
    later = plan_batch(
        [first._replace(received_at=start + 2 * 7 * 86400)], {b"u" * 16: row}, set(), {LATEST}, 10
    )
    assert later.cohorts == Counter({(week, 2): 1})
    again = later.users[b"u" * 16]
    assert again.weeks == 0b101 and again.first_week == week
    same_week = plan_batch(
        [first._replace(received_at=start + 15 * 86400)], {b"u" * 16: again}, set(), {LATEST}, 10
    )
    assert not same_week.cohorts


def test_weeks_past_the_bitmap_and_before_the_cohort_set_no_bit() -> None:
    """Week 62 after the cohort is past the bitmap, and a week before it (clock moved back) is no cohort week."""
    start = NOW - NOW % (7 * 86400)
    first = Record(b"u" * 16, "heartbeat", LATEST, "linux", "amd64", None, start)
    row = plan_batch([first], {}, set(), set(), 10).users[b"u" * 16]
    for weeks in (MAX_WEEKS, -1):
        plan = plan_batch(
            [first._replace(received_at=start + weeks * 7 * 86400)], {b"u" * 16: row}, set(), {LATEST}, 10
        )
        assert not plan.cohorts and all(r.weeks == 1 for r in plan.users.values()), weeks
    last = plan_batch(
        [first._replace(received_at=start + (MAX_WEEKS - 1) * 7 * 86400)],
        {b"u" * 16: row},
        set(),
        {LATEST},
        10,
    )
    assert last.cohorts == Counter({(week_index(start), MAX_WEEKS - 1): 1})


def test_an_earlier_week_after_a_later_one_still_counts() -> None:
    """A server clock moved back into a week not yet seen sets that week's bit, though the hour is older."""
    start = NOW - NOW % (7 * 86400)
    first = Record(b"u" * 16, "heartbeat", LATEST, "linux", "amd64", None, start)
    row = plan_batch([first], {}, set(), set(), 10).users[b"u" * 16]
    row = plan_batch(
        [first._replace(received_at=start + 14 * 86400)], {b"u" * 16: row}, set(), {LATEST}, 10
    ).users[b"u" * 16]
    back = plan_batch([first._replace(received_at=start + 7 * 86400)], {b"u" * 16: row}, set(), {LATEST}, 10)
    assert back.cohorts == Counter({(week_index(start), 1): 1})
    assert back.users[b"u" * 16].weeks == 0b111 and back.users[b"u" * 16].last_seen == row.last_seen
