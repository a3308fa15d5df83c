"""The SQL engine shared by the SQLite and PostgreSQL stores: group commit, reads, pruning, health."""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from exporter.errors import StoreUnavailable
from exporter.store.base import (
    FAMILIES,
    WINDOWS,
    DailyRow,
    Plan,
    Record,
    Snapshot,
    UserRow,
    WriteResult,
    active_counts,
    day_of,
    plan_batch,
    plan_removal,
)

log = logging.getLogger(__name__)
CommitObserver = Callable[[int, float], None]

PRUNE_SLICES = 64
USER_COLUMNS = "id, first_seen, last_seen, os, version, arch, configured, deployed"


class _Job:
    """Records waiting for the next group commit, or a maintenance call, and the future answering it."""

    __slots__ = ("future", "records", "task")

    def __init__(self, records: Sequence[Record] = (), task: Callable[[Any], Any] | None = None) -> None:
        self.records = records
        self.task = task
        self.future: Future[Any] = Future()


class SQLStore(ABC):
    """A Store on a DB-API database: one writer thread commits every waiting request in one transaction."""

    placeholder = "?"
    max_commit_records = 2000
    probe_interval = 1.0
    health_interval = 5.0
    max_attempts = 3
    rows_per_statement = 400
    write_timeout = 30.0
    gather_delay = 0.002  # most a waiting commit holds for requests still being parsed (seconds)

    def __init__(
        self,
        *,
        max_versions: int = 100,
        dedup_window: int = 172800,
        read_connections: int = 4,
        clock: Callable[[], float] = time.time,
        on_commit: CommitObserver | None = None,
        read_only: bool = False,
        driven: bool = False,
    ) -> None:
        self.max_versions = max_versions
        self.dedup_window = dedup_window
        self.clock = clock
        self.on_commit = on_commit
        self.read_only = read_only
        self.driven = driven  # no writer thread: the owner calls write_groups() and idle() itself
        self._jobs: list[_Job] = []
        self._arriving = 0
        self._cond = threading.Condition()
        self._closing = False
        self._healthy = True
        self._versions: set[str] = set()
        self._readers: queue.LifoQueue[Any] = queue.LifoQueue()
        self._reader_slots = threading.BoundedSemaphore(read_connections)
        self._writer_conn: Any = None
        self._last_dedup_prune = 0.0
        self._last_ok = 0.0
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    # ----- backend hooks -------------------------------------------------------------------
    @abstractmethod
    def _connect(self, *, writer: bool) -> Any:
        """Open a new connection."""

    @abstractmethod
    def _begin(self, cur: Any) -> None:
        """Start a write transaction."""

    @abstractmethod
    def _claim_dedup(self, cur: Any, keys: list[bytes], now: int) -> set[bytes]:
        """Insert dedup keys not yet present and return the ones this call inserted."""

    @abstractmethod
    def _lock_users(self, cur: Any, ids: list[bytes]) -> dict[bytes, UserRow]:
        """Return (and lock, where the backend can) the rows of these users."""

    @abstractmethod
    def _is_connection_error(self, exc: BaseException) -> bool:
        """Return whether an error means the connection must be replaced."""

    # ----- public contract -----------------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread (called by the backend once the schema is ready); readers have none."""
        if self.read_only:
            return
        self._versions = self._read(lambda cur: self._load_versions(cur))
        if not self.driven:
            self._thread.start()

    def write(self, records: Sequence[Record]) -> WriteResult:
        """Apply and commit records together with concurrent callers; durable at return."""
        if not records:
            return WriteResult([])
        return self._submit(_Job(records=records))

    def write_async(self, records: Sequence[Record]) -> Future[WriteResult]:
        """Queue records for the next group commit; the future resolves once they are durable."""
        job = _Job(records=records)
        self._enqueue(job)
        return job.future

    def _enqueue(self, job: _Job) -> None:
        """Hand a job to the writer thread."""
        with self._cond:
            if self._closing:
                raise StoreUnavailable("the server is shutting down; retry later")
            self._jobs.append(job)
            self._cond.notify()

    def write_groups(self, groups: Sequence[Sequence[Record]]) -> list[Future[WriteResult]]:
        """Driven mode: commit several callers' records now, in as few transactions as the budget allows."""
        jobs = [_Job(records=records) for records in groups]
        start = 0
        while start < len(jobs):
            taken, count = [jobs[start]], len(jobs[start].records)
            while start + len(taken) < len(jobs):
                size = len(jobs[start + len(taken)].records)
                if count + size > self.max_commit_records:
                    break
                taken.append(jobs[start + len(taken)])
                count += size
            self._commit(taken)
            start += len(taken)
        return [job.future for job in jobs]

    def idle(self) -> None:
        """Driven mode: the upkeep the writer thread does between commits (health probe, dedup pruning)."""
        self._idle()

    def _submit(self, job: _Job) -> Any:
        """Queue a job for the writer thread (or run it now, when driven) and wait for its answer."""
        if self.driven:
            self._commit([job])
            return job.future.result()
        self._enqueue(job)
        try:
            return job.future.result(timeout=self.write_timeout)
        except TimeoutError:
            raise StoreUnavailable("the store did not commit in time; retry later") from None

    def observe_commits(self, callback: CommitObserver) -> None:
        """Call callback(records, seconds) after every group commit (for the commit metrics)."""
        self.on_commit = callback

    def ready(self) -> bool:
        """Return whether the last write or probe succeeded."""
        return self._healthy and not self._closing and (self.driven or self._thread.is_alive())

    def snapshot(self, now: float) -> Snapshot:
        """Return every aggregate, reading only small tables."""
        return self._read(lambda cur: self._snapshot(cur, now))

    def daily(self, days: int, now: float) -> list[DailyRow]:
        """Return the last `days` days of rollups, oldest first, with empty days filled in."""
        return self._read(lambda cur: self._daily(cur, days, now))

    def prune(self, before: float) -> int:
        """Delete users not seen since `before`, adjusting user gauges; event aggregates stay.

        User ids are keyed hashes, so their first byte is uniform: the key space is walked in
        PRUNE_SLICES slices, one short transaction each, and writes and readiness checks queued
        meanwhile go between them instead of waiting for a walk over every user.
        """
        return sum(self.prune_slice(before, lo, hi) for lo, hi in prune_slices(PRUNE_SLICES))

    def prune_slice(self, before: float, lo: bytes, hi: bytes | None) -> int:
        """Prune the users with ids in [lo, hi) in one transaction; return how many went."""
        return self._submit(_Job(task=lambda cur: self._prune(cur, int(before), lo, hi)))

    def key_fingerprint(self, fingerprint: str) -> str:
        """Store the user-id key's fingerprint the first time; return the one the store holds."""

        def task(cur: Any) -> str:
            cur.execute(
                self._sql(
                    "INSERT INTO meta (key, value) VALUES ('key_fingerprint', ?) ON CONFLICT DO NOTHING"
                ),
                (fingerprint,),
            )
            return str(self._scalar(cur, "SELECT value FROM meta WHERE key = 'key_fingerprint'"))

        return self._submit(_Job(task=task))

    def user_count(self) -> int:
        """Return the number of per-user rows (for tests and benchmarks; scans)."""
        return self._read(lambda cur: self._scalar(cur, "SELECT COUNT(*) FROM users"))

    def close(self) -> None:
        """Commit what is queued, stop the writer and close every connection."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=self.write_timeout)
        if self.driven:
            self._safe_close(self._writer_conn)
            self._writer_conn = None
        while not self._readers.empty():
            self._safe_close(self._readers.get_nowait())

    # ----- reads ---------------------------------------------------------------------------
    def _read(self, fn: Callable[[Any], Any]) -> Any:
        """Run fn on a pooled read connection, replacing the connection if it broke."""
        if not self._reader_slots.acquire(timeout=self.write_timeout):
            raise StoreUnavailable("the store is busy; retry later")
        conn = None
        try:
            try:
                conn = self._readers.get_nowait()
            except queue.Empty:
                conn = self._connect(writer=False)
            cur = conn.cursor()
            try:
                result = fn(cur)
            finally:
                cur.close()
            self._end_read(conn)
            self._readers.put(conn)
            conn = None
            return result
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.warning("store read failed: %s", exc)
            raise StoreUnavailable() from exc
        finally:
            if conn is not None:
                self._safe_close(conn)
            self._reader_slots.release()

    def _end_read(self, conn: Any) -> None:
        """Finish a read so the connection holds no snapshot open."""
        conn.rollback()

    def _scalar(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run a query and return its single value."""
        cur.execute(self._sql(sql), params)
        row = cur.fetchone()
        return row[0] if row else None

    def _sql(self, sql: str) -> str:
        """Adapt `?` placeholders to the backend."""
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _snapshot(self, cur: Any, now: float) -> Snapshot:
        """Read the counters and the hour buckets of the last 30 days."""
        cur.execute("SELECT family, k1, k2, k3, value FROM counters")
        counters = {(f, a, b, c): int(v) for f, a, b, c, v in cur.fetchall()}
        # Summed in SQL, one row per version: folding ~3k hour buckets in Python was most of a scrape.
        now_hour = int(now) // 3600
        sums = ", ".join(["SUM(CASE WHEN hour > ? THEN users ELSE 0 END)"] * len(WINDOWS))
        cur.execute(
            self._sql(f"SELECT version, {sums} FROM hours WHERE hour > ? AND users <> 0 GROUP BY version"),
            (*(now_hour - hours for hours in WINDOWS.values()), now_hour - max(WINDOWS.values())),
        )
        active, by_version = active_counts(cur.fetchall())
        return Snapshot(counters=counters, active=active, active_by_version=by_version)

    def _daily(self, cur: Any, days: int, now: float) -> list[DailyRow]:
        """Fold the daily table into one row per day."""
        names = [day_of(now - 86400 * back) for back in range(days - 1, -1, -1)]
        cur.execute(self._sql("SELECT day, metric, version, value FROM daily WHERE day >= ?"), (names[0],))
        per_day: dict[str, Counter[str]] = {name: Counter() for name in names}
        versions: dict[str, Counter[str]] = {name: Counter() for name in names}
        for day, metric, version, value in cur.fetchall():
            if day not in per_day:
                continue
            per_day[day][metric] += int(value)
            if metric == "active":
                versions[day][version] += int(value)
        return [
            DailyRow(
                day=name,
                deployments_success=per_day[name]["deployments_success"],
                deployments_failure=per_day[name]["deployments_failure"],
                configs=per_day[name]["configs"],
                new_users=per_day[name]["new_users"],
                active_by_version=dict(versions[name]),
            )
            for name in names
        ]

    def _load_versions(self, cur: Any) -> set[str]:
        """Return the version label values already admitted under the cap."""
        cur.execute("SELECT value FROM label_values WHERE label = 'version'")
        return {row[0] for row in cur.fetchall()}

    # ----- the writer ----------------------------------------------------------------------
    def _run(self) -> None:
        """Writer loop: take every waiting job, commit them together, answer each."""
        while True:
            with self._cond:
                if not self._jobs and not self._closing:
                    self._cond.wait(timeout=self.probe_interval)
                self._gather()
                jobs = self._take_jobs()
                closing = self._closing
            if jobs:
                self._commit(jobs)
            elif closing:
                break
            else:
                self._idle()
        self._safe_close(self._writer_conn)
        self._writer_conn = None

    def _gather(self) -> None:
        """With jobs waiting, let requests already being parsed join this commit (up to gather_delay).

        Like PostgreSQL's commit_delay with commit_siblings: a lone request commits at once, but
        when others are in flight their records share the transaction, so on a busy core each
        commit's fixed cost is paid once for many requests instead of once for three or four.
        """
        if not self._jobs or not self._arriving or self.gather_delay <= 0:
            return
        deadline = time.monotonic() + self.gather_delay
        while self._arriving and not self._closing:
            left = deadline - time.monotonic()
            if left <= 0 or sum(len(job.records) for job in self._jobs) >= self.max_commit_records:
                return
            self._cond.wait(timeout=left)

    def announce(self) -> None:
        """Note that a request carrying records is being parsed (a hint for group commit)."""
        with self._cond:
            self._arriving += 1

    def withdraw(self) -> None:
        """Note that an announced request has its records ready (or has none)."""
        with self._cond:
            self._arriving -= 1
            if not self._arriving:
                self._cond.notify()

    def _take_jobs(self) -> list[_Job]:
        """Pop waiting jobs up to the per-commit record budget; maintenance jobs run alone."""
        if not self._jobs:
            return []
        if self._jobs[0].task is not None:
            return [self._jobs.pop(0)]
        taken, count = [], 0
        while self._jobs and self._jobs[0].task is None:
            size = len(self._jobs[0].records)
            if taken and count + size > self.max_commit_records:
                break
            taken.append(self._jobs.pop(0))
            count += size
        return taken

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """Yield a cursor inside a write transaction; commit on success, roll back on failure."""
        if self._writer_conn is None:
            self._writer_conn = self._connect(writer=True)
        conn = self._writer_conn
        cur = conn.cursor()
        try:
            self._begin(cur)
            yield cur
            conn.commit()
        except BaseException as exc:
            try:
                conn.rollback()
            except Exception:
                self._writer_conn = None
                self._safe_close(conn)
            if self._is_connection_error(exc) and self._writer_conn is not None:
                self._writer_conn = None
                self._safe_close(conn)
            raise
        finally:
            try:
                cur.close()
            except Exception:
                pass

    def _commit(self, jobs: list[_Job]) -> None:
        """Commit a group of jobs in one transaction (retrying conflicts) and answer each job's future."""
        started = time.perf_counter()
        records = [rec for job in jobs for rec in job.records]
        for attempt in range(self.max_attempts):
            try:
                answers = self._attempt(jobs, records)
                break
            except Exception as exc:
                self._versions = set()  # reload after a rollback: admitted versions may not be stored
                if attempt + 1 < self.max_attempts and self._is_retryable(exc):
                    continue
                self._mark_unhealthy(exc)
                for job in jobs:
                    job.future.set_exception(StoreUnavailable())
                return
        self._healthy = True
        self._last_ok = self.clock()
        if self.on_commit is not None and records:
            self.on_commit(len(records), time.perf_counter() - started)
        for job, answer in zip(jobs, answers, strict=True):
            job.future.set_result(answer)

    def _attempt(self, jobs: list[_Job], records: list[Record]) -> list[Any]:
        """Run one transaction for the jobs; return one answer per job."""
        with self._transaction() as cur:
            if jobs[0].task is not None:
                return [jobs[0].task(cur)]
            result = self._apply(cur, records)
        answers, offset = [], 0
        for job in jobs:
            answers.append(WriteResult(result.counted[offset : offset + len(job.records)]))
            offset += len(job.records)
        answers[0].overflow = result.overflow
        return answers

    def _prune_dedup(self, cur: Any, now: int) -> None:
        """Delete dedup keys older than the dedup window (by arrival time)."""
        cur.execute(self._sql("DELETE FROM dedup WHERE at < ?"), (now - self.dedup_window,))

    def _is_retryable(self, exc: BaseException) -> bool:
        """Return whether a failed transaction may simply be run again (e.g. a deadlock)."""
        return False

    def _mark_unhealthy(self, exc: BaseException) -> None:
        """Remember that the store failed, logging the first failure of a run loudly."""
        if self._healthy:
            log.error("store write failed, answering 503 until it recovers: %s", exc)
        self._healthy = False

    def _idle(self) -> None:
        """Between commits: probe a failed store, and drop expired dedup keys now and then."""
        now = self.clock()
        try:
            if not self._healthy or now - self._last_ok > self.health_interval:
                with self._transaction() as cur:
                    cur.execute(self._sql("UPDATE meta SET value = ? WHERE key = 'probe'"), (str(int(now)),))
                if not self._healthy:
                    self._versions = self._read(lambda cur: self._load_versions(cur))
                    log.info("store recovered")
                self._healthy = True
                self._last_ok = now
            elif now - self._last_dedup_prune > 60:
                with self._transaction() as cur:
                    self._prune_dedup(cur, int(now))
                self._last_dedup_prune = now
        except Exception as exc:
            self._mark_unhealthy(exc)

    def _apply(self, cur: Any, records: list[Record]) -> WriteResult:
        """Claim dedup keys, lock the touched users, plan the batch and write its effects."""
        keys = list(dict.fromkeys(rec.dedup_key for rec in records if rec.dedup_key is not None))
        claimed = self._claim_dedup(cur, keys, int(self.clock())) if keys else set()
        users = self._lock_users(cur, sorted({rec.user for rec in records}))
        if any(rec.version not in self._versions for rec in records):
            self._versions = self._load_versions(cur)
        plan = plan_batch(records, users, set(keys) - claimed, self._versions, self.max_versions)
        self._write_plan(cur, plan)
        return WriteResult(plan.counted, plan.overflow)

    def _upsert(self, cur: Any, head: str, width: int, rows: list[tuple], tail: str) -> None:
        """Run one multi-row INSERT per chunk: one statement step, so one GIL release, per chunk of rows."""
        group = "(" + ", ".join(["?"] * width) + ")"
        for start in range(0, len(rows), self.rows_per_statement):
            chunk = rows[start : start + self.rows_per_statement]
            params = [value for row in chunk for value in row]
            cur.execute(self._sql(f"{head} VALUES {', '.join([group] * len(chunk))} {tail}"), params)

    def _write_plan(self, cur: Any, plan: Plan) -> None:
        """Write a plan's user rows, counters, hour buckets, daily rollups and new label values."""
        if plan.users:
            self._upsert(
                cur,
                f"INSERT INTO users ({USER_COLUMNS})",
                8,
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
                    )
                    for uid, u in sorted(plan.users.items())
                ],
                "ON CONFLICT (id) DO UPDATE SET first_seen = excluded.first_seen, "
                "last_seen = excluded.last_seen, os = excluded.os, version = excluded.version, "
                "arch = excluded.arch, configured = excluded.configured, deployed = excluded.deployed",
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
        if plan.new_versions:
            self._upsert(
                cur,
                "INSERT INTO label_values (label, value)",
                2,
                [("version", v) for v in plan.new_versions],
                "ON CONFLICT DO NOTHING",
            )

    def _add_counters(self, cur: Any, counters: Counter, hours: Counter) -> None:
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

    def _prune(self, cur: Any, before: int, lo: bytes = b"", hi: bytes | None = None) -> int:
        """Delete inactive users with ids in [lo, hi), in chunks, moving them out of the user gauges."""
        removed, after = 0, lo
        bound = "" if hi is None else " AND id < ?"
        while True:
            cur.execute(
                self._sql(
                    f"SELECT {USER_COLUMNS} FROM users WHERE id >= ?{bound} AND last_seen < ? "
                    "ORDER BY id LIMIT 5000"
                ),
                (after, *(() if hi is None else (hi,)), before),
            )
            rows = cur.fetchall()
            if not rows:
                return removed
            after = bytes(rows[-1][0]) + b"\0"  # the next id after the last one
            counters, hours = plan_removal(_user_row(row) for row in rows)
            self._add_counters(cur, counters, hours)
            cur.executemany(self._sql("DELETE FROM users WHERE id = ?"), [(row[0],) for row in rows])
            removed += len(rows)

    @staticmethod
    def _safe_close(conn: Any) -> None:
        """Close a connection, ignoring errors from one that is already broken."""
        if conn is None:
            return
        try:
            conn.close()
        except Exception:
            pass


def prune_slices(count: int) -> list[tuple[bytes, bytes | None]]:
    """Split the id space into `count` [lo, hi) ranges by leading byte; the last range is open."""
    edges = [bytes([256 * n // count]) if n else b"" for n in range(count)]
    return [(edges[n], edges[n + 1] if n + 1 < count else None) for n in range(count)]


def _user_row(row: Sequence[Any]) -> UserRow:
    """Build a UserRow from a users-table row that starts with the id."""
    return UserRow(int(row[1]), int(row[2]), row[3], row[4], row[5], bool(row[6]), bool(row[7]))


def rows_to_users(rows: Sequence[Sequence[Any]]) -> dict[bytes, UserRow]:
    """Map users-table rows to {id: UserRow} (flags stay 0/1 ints, equal to the bools plans build)."""
    return {bytes(row[0]): UserRow._make(row[1:]) for row in rows}


__all__ = ["FAMILIES", "SQLStore", "rows_to_users"]
