"""A Store whose commits run in a child writer process, so the HTTP threads never convoy with it on the GIL.

Every sqlite3/psycopg call releases the GIL; in one process, each re-acquisition by the writer can wait a
whole switch interval behind busy request threads, and throughput collapses under load. Here the child
drives the SQL Writer with its own GIL; the parent reads the aggregates through its own read
connections. Calls and answers cross a pipe as the typed messages of store.messages. The child keeps no
clock of its own for data: each call carries the parent's `now`.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

from exporter.errors import StoreError, StoreUnavailable
from exporter.store import open_backend
from exporter.store.base import CommitObserver, DailyRow, Record, Snapshot, WriteResult
from exporter.store.commit import first_group
from exporter.store.messages import (
    Call,
    ChildMessage,
    Closed,
    Fault,
    FaultKind,
    Op,
    PruneSlice,
    Round,
    Started,
    StartFailed,
    Value,
    ValueAnswer,
    WriteAnswer,
    WriterSettings,
    decode_call,
    encode_call,
)
from exporter.store.readers import Reader
from exporter.store.sql import Writer, prune_slices

log = logging.getLogger(__name__)
START_TIMEOUT = 60.0
MAX_CALLS = 512  # calls taken from the pipe per round (each commit holds at most MAX_COMMIT_RECORDS)
UPKEEP_INTERVAL = 1.0  # seconds between the child's upkeep rounds, also under steady load


class WriterSession:
    """The child's side of the pipe: runs each round of calls on the Writer. One thread only."""

    def __init__(self, writer: Writer, now: float) -> None:
        self.writer = writer
        self.now = now  # the latest clock reading the parent sent: the child's only notion of time
        self._commits: list[tuple[int, float]] = []
        writer.on_commit = lambda count, seconds: self._commits.append((count, seconds))

    def serve(self, calls: Sequence[Call]) -> tuple[Round, bool]:
        """Commit the round's writes in as few transactions as the budget allows, then run the rest.

        Returns the round's answers (and commits) and False once a CLOSE call was seen.
        """
        if calls:
            self.now = calls[-1].now
        answered = Round([], [], [])
        writes = [call for call in calls if call.op is Op.WRITE and isinstance(call.args, tuple)]
        start = 0
        while start < len(writes):
            count = first_group(len(call.args) for call in writes[start:] if isinstance(call.args, tuple))
            self._commit(writes[start : start + count], answered)
            start += count
        keep_going = True
        for call in calls:
            if call.op is Op.CLOSE:
                keep_going = False
            elif not (call.op is Op.WRITE and isinstance(call.args, tuple)):
                self._run(call, answered)
        answered.commits.extend(self._commits)
        self._commits.clear()
        return answered, keep_going

    def upkeep(self) -> None:
        """Probe a failed store and expire dedup keys, as of the parent's latest clock reading."""
        self.writer.upkeep(self.now)

    def _commit(self, calls: list[Call], answered: Round) -> None:
        """Commit several write calls in one transaction; a failure answers each of them."""
        groups = [[Record(*fields) for fields in call.args] for call in calls if isinstance(call.args, tuple)]
        try:
            results = self.writer.commit(groups, self.now)
        except Exception as exc:
            fault = Fault.of(exc)
            answered.faults.extend((call.id, fault) for call in calls)
            return
        written: list[WriteAnswer] = [
            (call.id, result.counted, dict(result.overflow))
            for call, result in zip(calls, results, strict=True)
        ]
        answered.written.extend(written)

    def _run(self, call: Call, answered: Round) -> None:
        """Run one call other than a write; an unknown op or malformed arguments get an error answer."""
        try:
            value: ValueAnswer = (call.id, self._dispatch(call))
        except Exception as exc:
            answered.faults.append((call.id, Fault.of(exc)))
            return
        answered.values.append(value)

    def _dispatch(self, call: Call) -> bool | int | str:
        """Return the value a non-write call asks for."""
        args = call.args
        if call.op is Op.READY:
            return self.writer.healthy
        if call.op is Op.PRUNE and isinstance(args, PruneSlice):
            return self.writer.prune_slice(args.before, args.lo, args.hi)
        if call.op is Op.KEY_FINGERPRINT and isinstance(args, str):
            return self.writer.key_fingerprint(args)
        raise StoreError(f"the store writer cannot run op {call.op!r} with arguments {type(args).__name__}")


def _child_main(url: str, settings: WriterSettings, conn: Connection, cpu: int | None = None) -> None:
    """The writer process: take every call waiting in the pipe, commit them together, answer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError as exc:
            log.warning("writer process cannot pin to CPU %d (%s); running unpinned", cpu, exc)

    def send(message: ChildMessage) -> None:
        try:
            conn.send(message)
        except (OSError, EOFError):
            pass

    try:
        backend = open_backend(url)
        backend.prepare()
    except (StoreError, OSError) as exc:
        send(StartFailed(Fault(FaultKind.ERROR, str(exc))))
        return
    writer = Writer(backend, max_versions=settings.max_versions, dedup_window=settings.dedup_window)
    session = WriterSession(writer, settings.now)
    send(Started())
    try:
        last_upkeep = time.monotonic()
        keep_going = True
        while keep_going:
            calls = _receive(conn)
            if calls is None:
                break  # the parent is gone (even by kill -9): stop
            if calls:
                answered, keep_going = session.serve(calls)
                send(answered)
            if time.monotonic() - last_upkeep >= UPKEEP_INTERVAL:
                session.upkeep()
                last_upkeep = time.monotonic()
    finally:
        writer.close()
        send(Closed())


def _receive(conn: Connection) -> list[Call] | None:
    """Take every waiting call, waiting up to UPKEEP_INTERVAL for the first; None when the pipe closed."""
    try:
        if not conn.poll(UPKEEP_INTERVAL):
            return []
        calls = [decode_call(conn.recv())]
        while len(calls) < MAX_CALLS and conn.poll(0):
            calls.append(decode_call(conn.recv()))
    except (EOFError, OSError):
        return None
    return calls


class WriterProcessStore:
    """The Store contract (see base.Store), with writes committed by a child process and reads done here.

    It has no gather hint (`arrivals` is None): the child drains the pipe, so whatever arrives
    during a commit joins the next one.
    """

    call_timeout = 30.0
    arrivals = None

    def __init__(
        self,
        url: str,
        *,
        max_versions: int = 100,
        dedup_window: int = 172800,
        clock: Callable[[], float] = time.time,
        cpu: int | None = None,
        read_connections: int = 4,
    ) -> None:
        self.clock = clock
        self._observer: CommitObserver | None = None  # set by observe_commits
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        settings = WriterSettings(max_versions, dedup_window, clock())
        self._proc = context.Process(
            target=_child_main, args=(url, settings, child_conn, cpu), name="flakedrop-writer", daemon=True
        )
        self._proc.start()
        child_conn.close()
        if not self._conn.poll(START_TIMEOUT):
            self._proc.kill()
            raise StoreError("the store writer process did not start")
        try:
            status = self._conn.recv()
        except (EOFError, OSError):
            status = StartFailed(
                Fault(FaultKind.ERROR, "the store writer process exited while opening the store")
            )
        if not isinstance(status, Started):
            self._proc.join(timeout=10)
            reason = status.fault.reason if isinstance(status, StartFailed) else f"unexpected {status!r}"
            raise StoreError(reason)
        self._reader = Reader(open_backend(url), connections=read_connections)
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[Value | None]] = {}
        self._lock = threading.Lock()
        self._alive = True
        self._receiver = threading.Thread(target=self._receive, name="store-receiver", daemon=True)
        self._receiver.start()

    def write(self, records: Sequence[Record]) -> WriteResult:
        """Commit records in the child (group commit there); durable at return."""
        if not records:
            return WriteResult([])
        answer = self._call(Op.WRITE, tuple(map(tuple, records)))  # plain tuples pickle faster
        if not isinstance(answer, tuple):
            raise StoreError(f"the store writer answered a write with {answer!r}")
        counted, overflow = answer
        return WriteResult(counted, Counter(overflow))

    def snapshot(self, now: float) -> Snapshot:
        """Read the aggregates through this process's read connections."""
        return self._reader.snapshot(now)

    def daily(self, days: int, now: float) -> list[DailyRow]:
        """Read the daily rollups."""
        return self._reader.daily(days, now)

    def user_count(self) -> int:
        """Count per-user rows (a scan: for tests and benchmarks)."""
        return self._reader.user_count()

    def ready(self) -> bool:
        """Ask the child whether its store takes writes."""
        try:
            return bool(self._call(Op.READY, None, timeout=5.0))
        except (StoreUnavailable, StoreError):
            return False

    def prune(self, before: float) -> int:
        """Prune in the child, one id slice per call, so writes are committed between the slices."""
        removed = 0
        for lo, hi in prune_slices():
            count = self._call(Op.PRUNE, PruneSlice(before, lo, hi), timeout=600.0)
            if not isinstance(count, int):
                raise StoreError(f"the store writer answered a prune with {count!r}")
            removed += count
        return removed

    def key_fingerprint(self, fingerprint: str) -> str:
        """Remember the key fingerprint in the child's store."""
        return str(self._call(Op.KEY_FINGERPRINT, fingerprint))

    def observe_commits(self, callback: CommitObserver) -> None:
        """Report the child's group commits to callback (from the receiver thread)."""
        self._observer = callback

    def close(self) -> None:
        """Let the child commit what it has, stop it, and close the readers."""
        with self._lock:
            if self._alive:
                try:
                    self._conn.send(encode_call(0, Op.CLOSE, self.clock()))
                except (OSError, EOFError):
                    pass
        self._proc.join(timeout=self.call_timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)
        self._receiver.join(timeout=5)
        self._conn.close()
        self._reader.close()

    def _receive(self) -> None:
        """Resolve the futures of answered calls; fail them all if the child dies."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            if not isinstance(message, Round):
                break  # Closed (or nothing this side understands): the child is done
            observer = self._observer
            if observer is not None:
                for count, seconds in message.commits:
                    observer(count, seconds)
            with self._lock:
                pending = self._pending
                written = [
                    (pending.pop(call_id, None), (counted, overflow))
                    for call_id, counted, overflow in message.written
                ]
                values = [(pending.pop(call_id, None), value) for call_id, value in message.values]
                faults = [(pending.pop(call_id, None), fault) for call_id, fault in message.faults]
            for future, result in (*written, *values):
                if future is not None:
                    future.set_result(result)
            for future, fault in faults:
                if future is not None:
                    future.set_exception(fault.exception())
        self._alive = False
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(StoreUnavailable("the store writer stopped; retry later"))
        if self._proc.exitcode not in (None, 0):
            log.error("store writer process exited with %s", self._proc.exitcode)

    def _call(self, op: Op, args: Any, timeout: float | None = None) -> Value | None:
        """Send one call, stamped with this process's clock, and wait for its answer."""
        future: Future[Value | None] = Future()
        with self._lock:
            if not self._alive:
                raise StoreUnavailable("the store writer is not running; retry later")
            call_id = next(self._ids)
            self._pending[call_id] = future
            try:
                self._conn.send(encode_call(call_id, op, self.clock(), args))
            except (OSError, EOFError):
                self._pending.pop(call_id, None)
                raise StoreUnavailable("the store writer is not running; retry later") from None
        try:
            return future.result(timeout=timeout or self.call_timeout)
        except TimeoutError:
            with self._lock:
                self._pending.pop(call_id, None)
            raise StoreUnavailable("the store did not commit in time; retry later") from None
