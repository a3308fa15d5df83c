"""A Store whose commits run in a child writer process, so the HTTP threads never convoy with it on the GIL.

Every sqlite3/psycopg call releases the GIL; in one process, each re-acquisition by the writer can wait a
whole switch interval behind busy request threads, and throughput collapses under load. Here the child
owns the group-commit engine and its own GIL; the parent reads the aggregates through its own read-only
connections. Records and answers cross a pipe as plain tuples.
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
from exporter.store.base import DailyRow, Record, Snapshot, WriteResult
from exporter.store.engine import PRUNE_SLICES, prune_slices

log = logging.getLogger(__name__)
START_TIMEOUT = 60.0
MAX_CALLS = 512  # calls taken from the pipe per round (each commit holds at most max_commit_records)


def _child_main(url: str, kwargs: dict[str, Any], conn: Connection, cpu: int | None = None) -> None:
    """The writer process: one thread takes every call waiting in the pipe, commits them together, answers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError as exc:
            log.warning("writer process cannot pin to CPU %d (%s); running unpinned", cpu, exc)
    from exporter.store import open_store

    def send(message: Any) -> None:
        try:
            conn.send(message)
        except (OSError, EOFError):
            pass

    try:
        store = open_store(url, driven=True, **kwargs)
    except (StoreError, OSError) as exc:
        send(("error", str(exc)))
        return
    commits: list[tuple[int, float]] = []
    store.observe_commits(lambda n, seconds: commits.append((n, seconds)))
    send(("started", None))
    try:
        last_upkeep = time.monotonic()
        while _serve_calls(store, conn, commits, send):
            if time.monotonic() - last_upkeep >= store.probe_interval:
                store.idle()  # also under steady load: probes a failed store, prunes dedup keys
                last_upkeep = time.monotonic()
    finally:
        store.close()
        send(("closed", None))


def _serve_calls(store: Any, conn: Connection, commits: list, send: Callable[[Any], None]) -> bool:
    """Take every waiting call (blocking for the first), run them, send the answers; False to stop."""
    try:
        if not conn.poll(store.probe_interval):
            return True
        calls = [conn.recv()]
        while len(calls) < MAX_CALLS and conn.poll(0):
            calls.append(conn.recv())
    except (EOFError, OSError):
        return False  # the parent is gone (even by kill -9): stop
    answers: list[tuple[int, bool, Any]] = []
    writes = [(call_id, payload) for call_id, op, payload in calls if op == "write"]
    if writes:
        futures = store.write_groups([[Record(*fields) for fields in payload] for _, payload in writes])
        for (call_id, _), future in zip(writes, futures, strict=True):
            exc = future.exception()
            if exc is not None:
                answers.append((call_id, False, str(exc)))
            else:
                result: WriteResult = future.result()
                answers.append((call_id, True, (result.counted, dict(result.overflow))))
    keep_going = True
    for call_id, op, payload in calls:
        if op == "write":
            continue
        if op == "close":
            keep_going = False
            continue
        try:
            if op == "ready":
                value = store.ready()
            elif op == "prune":
                value = store.prune_slice(*payload)
            else:
                value = store.key_fingerprint(payload)
            answers.append((call_id, True, value))
        except Exception as exc:
            answers.append((call_id, False, str(exc)))
    send(("answers", answers, commits[:]))
    commits.clear()
    return keep_going


class WriterProcessStore:
    """The Store contract, with writes committed by a child process and reads done here."""

    call_timeout = 30.0

    def __init__(self, url: str, reader_factory: Callable[[], Any], **kwargs: Any) -> None:
        kwargs.pop("clock", None)  # the child keeps real time
        cpu: int | None = kwargs.pop("cpu", None)
        self._observer: Callable[[int, float], None] | None = kwargs.pop("on_commit", None)
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._proc = context.Process(
            target=_child_main, args=(url, kwargs, child_conn, cpu), name="flakedrop-writer", daemon=True
        )
        self._proc.start()
        child_conn.close()
        if not self._conn.poll(START_TIMEOUT):
            self._proc.kill()
            raise StoreError("the store writer process did not start")
        try:
            status, detail = self._conn.recv()
        except (EOFError, OSError):
            status, detail = "error", "the store writer process exited while opening the store"
        if status != "started":
            self._proc.join(timeout=10)
            raise StoreError(detail)
        self._reader = reader_factory()
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._alive = True
        self._receiver = threading.Thread(target=self._receive, name="store-receiver", daemon=True)
        self._receiver.start()

    def _receive(self) -> None:
        """Resolve the futures of answered calls; fail them all if the child dies."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "closed":
                break
            _, answers, commits = message
            if self._observer is not None:
                for count, seconds in commits:
                    self._observer(count, seconds)
            with self._lock:
                futures = [self._pending.pop(call_id, None) for call_id, _, _ in answers]
            for future, (_, ok, value) in zip(futures, answers, strict=True):
                if future is None:
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(
                        StoreUnavailable(f"the store could not commit ({value}); retry later")
                    )
        self._alive = False
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(StoreUnavailable("the store writer stopped; retry later"))
        if self._proc.exitcode not in (None, 0):
            log.error("store writer process exited with %s", self._proc.exitcode)

    def _call(self, op: str, payload: Any, timeout: float | None = None) -> Any:
        """Send one call to the child and wait for its answer."""
        future: Future[Any] = Future()
        with self._lock:
            if not self._alive:
                raise StoreUnavailable("the store writer is not running; retry later")
            call_id = next(self._ids)
            self._pending[call_id] = future
            try:
                self._conn.send((call_id, op, payload))
            except (OSError, EOFError):
                self._pending.pop(call_id, None)
                raise StoreUnavailable("the store writer is not running; retry later") from None
        try:
            return future.result(timeout=timeout or self.call_timeout)
        except TimeoutError:
            with self._lock:
                self._pending.pop(call_id, None)
            raise StoreUnavailable("the store did not commit in time; retry later") from None

    def write(self, records: Sequence[Record]) -> WriteResult:
        """Commit records in the child (group commit there); durable at return."""
        if not records:
            return WriteResult([])
        payload = list(map(tuple, records))  # a Record is a NamedTuple: send the plain tuple
        counted, overflow = self._call("write", payload)
        return WriteResult(counted, Counter(overflow))

    def announce(self) -> None:
        """No-op: the child drains the pipe, so whatever arrived during a commit joins the next one."""

    def withdraw(self) -> None:
        """No-op (see announce)."""

    def snapshot(self, now: float) -> Snapshot:
        """Read the aggregates through this process's read-only connections."""
        return self._reader.snapshot(now)

    def daily(self, days: int, now: float) -> list[DailyRow]:
        """Read the daily rollups."""
        return self._reader.daily(days, now)

    def user_count(self) -> int:
        """Count per-user rows."""
        return self._reader.user_count()

    def ready(self) -> bool:
        """Ask the child whether its store takes writes."""
        try:
            return bool(self._call("ready", None, timeout=5.0))
        except StoreUnavailable:
            return False

    def prune(self, before: float) -> int:
        """Prune in the child, one id slice per call, so writes are committed between the slices."""
        return sum(
            int(self._call("prune", (before, lo, hi), timeout=600.0)) for lo, hi in prune_slices(PRUNE_SLICES)
        )

    def key_fingerprint(self, fingerprint: str) -> str:
        """Remember the key fingerprint in the child's store."""
        return str(self._call("key_fingerprint", fingerprint))

    def observe_commits(self, callback: Callable[[int, float], None]) -> None:
        """Report the child's group commits to callback."""
        self._observer = callback

    def close(self) -> None:
        """Let the child commit what it has, stop it, and close the readers."""
        with self._lock:
            if self._alive:
                try:
                    self._conn.send((0, "close", None))
                except (OSError, EOFError):
                    pass
        self._proc.join(timeout=self.call_timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)
        self._receiver.join(timeout=5)
        self._conn.close()
        self._reader.close()
