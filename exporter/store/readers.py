"""The read side of a store: a bounded pool of read connections, and the reads run through it."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from exporter.errors import StoreUnavailable
from exporter.store.base import DailyRow, Snapshot
from exporter.store.reads import count_users, read_daily, read_snapshot
from exporter.store.sql import Backend, safe_close

log = logging.getLogger(__name__)
T = TypeVar("T")


class Reader:
    """Reads aggregates through at most `connections` pooled read connections. Thread-safe."""

    def __init__(self, backend: Backend, *, connections: int = 4, timeout: float = 30.0) -> None:
        self.backend = backend
        self.timeout = timeout
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(connections)

    def snapshot(self, now: float) -> Snapshot:
        """Return every aggregate as of now. Raises StoreUnavailable."""
        return self._run(lambda cur: read_snapshot(self.backend, cur, now))

    def daily(self, days: int, now: float) -> list[DailyRow]:
        """Return the last `days` days of rollups, oldest first. Raises StoreUnavailable."""
        return self._run(lambda cur: read_daily(self.backend, cur, days, now))

    def user_count(self) -> int:
        """Return the number of per-user rows (scans; for tests and benchmarks)."""
        return self._run(count_users)

    def close(self) -> None:
        """Close the idle connections (call after the last read)."""
        while not self._idle.empty():
            safe_close(self._idle.get_nowait())

    def _run(self, fn: Callable[[Any], T]) -> T:
        """Run fn on a pooled read connection, replacing the connection if it broke."""
        if not self._slots.acquire(timeout=self.timeout):
            raise StoreUnavailable("the store is busy; retry later")
        conn = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self.backend.connect(writer=False)
            cur = conn.cursor()
            try:
                result = fn(cur)
            finally:
                cur.close()
            self.backend.end_read(conn)
            self._idle.put(conn)
            conn = None
            return result
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.warning("store read failed: %s", exc)
            raise StoreUnavailable() from exc
        finally:
            if conn is not None:
                safe_close(conn)
            self._slots.release()
