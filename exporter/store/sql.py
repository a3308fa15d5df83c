"""The SQL of the store, shared by SQLite and PostgreSQL: write transactions, reads, pruning, upkeep."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from exporter.errors import StoreUnavailable
from exporter.normalize import OTHER, UNKNOWN
from exporter.store.base import CommitObserver, WriteResult
from exporter.store.planner import HourKey, Key, Plan, Record, UserRow, plan_batch, plan_removal
from exporter.weeks import MAX_WEEKS, week_sql

log = logging.getLogger(__name__)
UNLABELLED = frozenset({UNKNOWN, OTHER})  # version labels never admitted under --max-versions
T = TypeVar("T")

PRUNE_SLICES = 64
USER_COLUMNS = "id, first_seen, last_seen, os, version, arch, configured, deployed, first_week, weeks"


class Backend(ABC):
    """What differs between databases: connecting, schema, locking and a few statements."""

    placeholder = "?"

    @abstractmethod
    def connect(self, *, writer: bool) -> Any:
        """Open a new DB-API connection (read-only unless writer)."""

    @abstractmethod
    def prepare(self) -> None:
        """Refuse a database that is not ours, then create or upgrade the schema (raises StoreError)."""

    @abstractmethod
    def begin(self, cur: Any) -> None:
        """Start a write transaction."""

    @abstractmethod
    def claim_dedup(self, cur: Any, keys: list[bytes], now: int) -> set[bytes]:
        """Insert dedup keys not yet present and return the ones this call inserted."""

    @abstractmethod
    def lock_users(self, cur: Any, ids: list[bytes]) -> dict[bytes, UserRow]:
        """Return (and lock, where the backend can) the rows of these users."""

    @abstractmethod
    def is_connection_error(self, exc: BaseException) -> bool:
        """Return whether an error means the connection must be replaced."""

    def is_retryable(self, exc: BaseException) -> bool:
        """Return whether a failed transaction may simply be run again (e.g. a deadlock)."""
        return False

    def prune_dedup(self, cur: Any, now: int, window: int) -> None:
        """Delete dedup keys that arrived more than `window` seconds before `now`."""
        cur.execute(self.sql("DELETE FROM dedup WHERE at < ?"), (now - window,))

    def end_read(self, conn: Any) -> None:
        """Finish a read so the connection holds no snapshot open."""
        conn.rollback()

    def sql(self, text: str) -> str:
        """Adapt `?` placeholders to the backend."""
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)


class Writer:
    """The one write connection and everything done through it. Not thread-safe: one owner thread.

    Failures raise StoreUnavailable after the transaction was rolled back; `healthy` tells whether
    the last transaction (or probe) succeeded.
    """

    max_attempts = 3
    rows_per_statement = 400
    health_interval = 5.0  # seconds without a commit before upkeep probes the store
    dedup_expiry_interval = 60.0  # seconds of data time between deletions of expired dedup keys

    def __init__(
        self,
        backend: Backend,
        *,
        max_versions: int = 100,
        dedup_window: int = 172800,
        on_commit: CommitObserver | None = None,
    ) -> None:
        self.backend = backend
        self.max_versions = max_versions
        self.dedup_window = dedup_window
        self.on_commit = on_commit
        self.healthy = True
        self._conn: Any = None
        self._versions: set[str] = set()  # version labels admitted under the cap (reloaded when missed)
        self._last_ok = 0.0  # time.monotonic() of the last successful transaction
        self._expired_at: float | None = None  # data time of the last dedup expiry

    def commit(self, groups: Sequence[Sequence[Record]], now: float) -> list[WriteResult]:
        """Commit several callers' records in one transaction at data time `now`; one result per caller."""
        started = time.perf_counter()
        records = [rec for group in groups for rec in group]
        expire = self._expiry_due(now)

        def apply(cur: Any) -> WriteResult:
            if expire:  # rides along with a write once a minute, so expiry keeps up under steady load
                self.backend.prune_dedup(cur, int(now), self.dedup_window)
            return self._apply(cur, records, int(now))

        result = self._run(apply)
        if expire:
            self._expired_at = now
        if self.on_commit is not None and records:
            self.on_commit(len(records), time.perf_counter() - started)
        answers, offset = [], 0
        for group in groups:
            answers.append(WriteResult(result.counted[offset : offset + len(group)]))
            offset += len(group)
        answers[0].overflow = result.overflow
        return answers

    def prune_slice(self, before: float, lo: bytes, hi: bytes | None) -> int:
        """Prune the users with ids in [lo, hi) not seen since `before`, in one transaction."""
        return self._run(lambda cur: self._prune(cur, int(before), lo, hi))

    def key_fingerprint(self, fingerprint: str) -> str:
        """Store the key fingerprint the first time; return the stored one."""

        def task(cur: Any) -> str:
            cur.execute(
                self.backend.sql(
                    "INSERT INTO meta (key, value) VALUES ('key_fingerprint', ?) ON CONFLICT DO NOTHING"
                ),
                (fingerprint,),
            )
            return str(scalar(cur, "SELECT value FROM meta WHERE key = 'key_fingerprint'"))

        return self._run(task)

    def upkeep(self, now: float) -> None:
        """Between commits: probe a failed or quiet store, else expire dedup keys when due; never raises."""
        probe = not self.healthy or time.monotonic() - self._last_ok > self.health_interval
        if not probe and not self._expiry_due(now):
            return
        was_healthy = self.healthy
        try:
            if probe:
                self._run(
                    lambda cur: cur.execute(
                        self.backend.sql("UPDATE meta SET value = ? WHERE key = 'probe'"), (str(int(now)),)
                    )
                )
                if not was_healthy:
                    log.info("store recovered")
            else:
                self._run(lambda cur: self.backend.prune_dedup(cur, int(now), self.dedup_window))
                self._expired_at = now
        except StoreUnavailable:
            pass  # _run marked the store unhealthy; the next upkeep probes again

    def close(self) -> None:
        """Close the write connection."""
        safe_close(self._conn)
        self._conn = None

    def _expiry_due(self, now: float) -> bool:
        """Return whether expired dedup keys should be deleted at data time `now`."""
        return self._expired_at is None or now - self._expired_at >= self.dedup_expiry_interval

    def _run(self, fn: Callable[[Any], T]) -> T:
        """Run fn in a write transaction, retrying conflicts; raise StoreUnavailable if it fails."""
        for attempt in range(self.max_attempts):
            try:
                with self._transaction() as cur:
                    value = fn(cur)
                break
            except Exception as exc:
                self._versions = set()  # reload after a rollback: admitted versions may not be stored
                if attempt + 1 < self.max_attempts and self.backend.is_retryable(exc):
                    continue
                if self.healthy:
                    log.error("store write failed, answering 503 until it recovers: %s", exc)
                self.healthy = False
                raise StoreUnavailable() from exc
        self.healthy = True
        self._last_ok = time.monotonic()
        return value

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """Yield a cursor inside a write transaction; commit on success, roll back on failure."""
        if self._conn is None:
            self._conn = self.backend.connect(writer=True)
        conn = self._conn
        cur = conn.cursor()
        try:
            self.backend.begin(cur)
            yield cur
            conn.commit()
        except BaseException as exc:
            try:
                conn.rollback()
            except Exception:
                self._conn = None
                safe_close(conn)
            if self.backend.is_connection_error(exc) and self._conn is not None:
                self._conn = None
                safe_close(conn)
            raise
        finally:
            try:
                cur.close()
            except Exception:
                pass

    def _apply(self, cur: Any, records: list[Record], now: int) -> WriteResult:
        """Claim dedup keys, lock the touched users, plan the batch and write its effects."""
        keys = list(dict.fromkeys(rec.dedup_key for rec in records if rec.dedup_key is not None))
        claimed = self.backend.claim_dedup(cur, keys, now) if keys else set()
        users = self.backend.lock_users(cur, sorted({rec.user for rec in records}))
        if self._may_admit(records):  # another replica may have admitted it meanwhile
            self._versions = load_versions(cur)
        plan = plan_batch(records, users, set(keys) - claimed, self._versions, self.max_versions)
        self._write_plan(cur, plan)
        return WriteResult(plan.counted, plan.overflow)

    def _may_admit(self, records: list[Record]) -> bool:
        """Return whether the batch has a version label the cap could still admit and we do not know.

        `unknown` and `other` are never admitted, and once the cap is full no version is: reloading the
        admitted versions for those would add a query to every such commit and change nothing.
        """
        if len(self._versions) >= self.max_versions:
            return False
        known = self._versions
        return any(rec.version not in known and rec.version not in UNLABELLED for rec in records)

    def _upsert(self, cur: Any, head: str, width: int, rows: list[tuple[Any, ...]], tail: str) -> None:
        """Run one multi-row INSERT per chunk: one statement step, so one GIL release, per chunk of rows."""
        group = "(" + ", ".join(["?"] * width) + ")"
        for start in range(0, len(rows), self.rows_per_statement):
            chunk = rows[start : start + self.rows_per_statement]
            params = [value for row in chunk for value in row]
            cur.execute(self.backend.sql(f"{head} VALUES {', '.join([group] * len(chunk))} {tail}"), params)

    def _write_plan(self, cur: Any, plan: Plan) -> None:
        """Write a plan's user rows, counters, hour buckets, daily rollups and new label values."""
        if plan.users:
            self._upsert(
                cur,
                f"INSERT INTO users ({USER_COLUMNS})",
                10,
                [
                    (
                        uid,
                        u.first_seen,
                        u.last_seen,
                        u.os,
                        u.version,
                        u.arch,
                        int(u.configured),
                        int(u.deployed),
                        u.first_week,
                        u.weeks,
                    )
                    for uid, u in sorted(plan.users.items())
                ],
                "ON CONFLICT (id) DO UPDATE SET first_seen = excluded.first_seen, "
                "last_seen = excluded.last_seen, os = excluded.os, version = excluded.version, "
                "arch = excluded.arch, configured = excluded.configured, deployed = excluded.deployed, "
                "first_week = excluded.first_week, weeks = excluded.weeks",
            )
        self._add_counters(cur, plan.counters, plan.hours)
        if plan.daily:
            self._upsert(
                cur,
                "INSERT INTO daily (day, metric, version, value)",
                4,
                [(*key, value) for key, value in sorted(plan.daily.items())],
                "ON CONFLICT (day, metric, version) DO UPDATE SET value = daily.value + excluded.value",
            )
        if plan.cohorts:  # only when a user's weeks gained a bit: about once per user per week
            self._upsert(
                cur,
                "INSERT INTO cohorts (cohort, k, users)",
                3,
                [(*key, value) for key, value in sorted(plan.cohorts.items()) if value],
                "ON CONFLICT (cohort, k) DO UPDATE SET users = cohorts.users + excluded.users",
            )
        if plan.new_versions:
            self._upsert(
                cur,
                "INSERT INTO label_values (label, value)",
                2,
                [("version", v) for v in plan.new_versions],
                "ON CONFLICT DO NOTHING",
            )

    def _add_counters(self, cur: Any, counters: Counter[Key], hours: Counter[HourKey]) -> None:
        """Add deltas to the counters and hour-bucket tables, in key order to avoid deadlocks."""
        rows = [(*key, value) for key, value in sorted(counters.items()) if value]
        if rows:
            self._upsert(
                cur,
                "INSERT INTO counters (family, k1, k2, k3, value)",
                5,
                rows,
                "ON CONFLICT (family, k1, k2, k3) DO UPDATE SET value = counters.value + excluded.value",
            )
        hour_rows = [(*key, value) for key, value in sorted(hours.items()) if value]
        if hour_rows:
            self._upsert(
                cur,
                "INSERT INTO hours (hour, version, users)",
                3,
                hour_rows,
                "ON CONFLICT (hour, version) DO UPDATE SET users = hours.users + excluded.users",
            )

    def _prune(self, cur: Any, before: int, lo: bytes, hi: bytes | None) -> int:
        """Delete inactive users with ids in [lo, hi), in chunks, moving them out of the user gauges."""
        removed, after = 0, lo
        bound = "" if hi is None else " AND id < ?"
        while True:
            cur.execute(
                self.backend.sql(
                    f"SELECT {USER_COLUMNS} FROM users WHERE id >= ?{bound} AND last_seen < ? "
                    "ORDER BY id LIMIT 5000"
                ),
                (after, *(() if hi is None else (hi,)), before),
            )
            rows = cur.fetchall()
            if not rows:
                return removed
            after = bytes(rows[-1][0]) + b"\0"  # the next id after the last one
            counters, hours = plan_removal(rows_to_users(rows).values())
            self._add_counters(cur, counters, hours)
            cur.executemany(self.backend.sql("DELETE FROM users WHERE id = ?"), [(row[0],) for row in rows])
            removed += len(rows)


def load_versions(cur: Any) -> set[str]:
    """Return the version label values already admitted under the cap."""
    cur.execute("SELECT value FROM label_values WHERE label = 'version'")
    return {row[0] for row in cur.fetchall()}


def scalar(cur: Any, sql: str) -> Any:
    """Run a query without parameters and return its single value (None without a row)."""
    cur.execute(sql)
    row = cur.fetchone()
    return row[0] if row else None


def cohort_migration(integer: str, table_options: str, one: str) -> tuple[str, ...]:
    """Return the statements that fill first_week/weeks of existing users and backfill the cohorts table.

    `integer` is the column type, `one` a 64-bit literal 1 (shifted into the weeks bitmap).
    """
    first, last = week_sql("first_seen"), week_sql("last_seen")
    since = f"({last} - {first})"
    return (
        f"UPDATE users SET first_week = {first}, weeks = 1 | CASE WHEN {since} BETWEEN 1 AND {MAX_WEEKS - 1} "
        f"THEN {one} << CAST({since} AS INTEGER) ELSE 0 END",
        f"CREATE TABLE cohorts (cohort {integer} NOT NULL, k {integer} NOT NULL, users {integer} NOT NULL,"
        f" PRIMARY KEY (cohort, k)){table_options}",
        "INSERT INTO cohorts (cohort, k, users) SELECT first_week, 0, COUNT(*) FROM users GROUP BY first_week",
        f"INSERT INTO cohorts (cohort, k, users) SELECT first_week, {last} - first_week, COUNT(*) FROM users"
        f" WHERE {last} - first_week BETWEEN 1 AND {MAX_WEEKS - 1} GROUP BY first_week, {last} - first_week",
    )


# ----- helpers ------------------------------------------------------------------------------
def prune_slices(count: int = PRUNE_SLICES) -> list[tuple[bytes, bytes | None]]:
    """Split the id space into `count` [lo, hi) ranges by leading byte; the last range is open.

    User ids are keyed hashes, so their first byte is uniform: pruning one slice per transaction lets
    writes and readiness checks queued meanwhile go between the slices.
    """
    edges = [bytes([256 * n // count]) if n else b"" for n in range(count)]
    return [(edges[n], edges[n + 1] if n + 1 < count else None) for n in range(count)]


def rows_to_users(rows: Sequence[Sequence[Any]]) -> dict[bytes, UserRow]:
    """Map users-table rows to {id: UserRow} (flags stay 0/1 ints, equal to the bools plans build)."""
    return {bytes(row[0]): UserRow._make(row[1:]) for row in rows}


def safe_close(conn: Any) -> None:
    """Close a connection, ignoring errors from one that is already broken."""
    if conn is None:
        return
    try:
        conn.close()
    except Exception:
        pass
