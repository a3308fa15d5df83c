"""The Store in one process: a committer thread drives the SQL writer, a pool serves the reads."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

from exporter.store.base import CommitObserver, DailyRow, Record, Snapshot, WriteResult
from exporter.store.commit import GATHER_DELAY, GroupCommitter
from exporter.store.readers import Reader
from exporter.store.sql import Backend, Writer, prune_slices


class LocalStore:
    """The Store contract (see base.Store) with commits on a thread of this process.

    `arrivals` is the committer's gather hint.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_versions: int = 100,
        dedup_window: int = 172800,
        read_connections: int = 4,
        clock: Callable[[], float] = time.time,
        gather_delay: float = GATHER_DELAY,
    ) -> None:
        self._reader = Reader(backend, connections=read_connections)
        backend.prepare()
        self._writer = Writer(backend, max_versions=max_versions, dedup_window=dedup_window)
        self._committer = GroupCommitter(self._writer, clock, gather_delay=gather_delay)
        self._committer.start()
        self.arrivals: GroupCommitter | None = self._committer

    @property
    def dedup_window(self) -> int:
        """Return the seconds during which an identical event is counted once."""
        return self._writer.dedup_window

    def write(self, records: Sequence[Record]) -> WriteResult:
        """Commit records together with concurrent callers; durable at return (see base.Store)."""
        if not records:
            return WriteResult([])
        return self._committer.write(records)

    def snapshot(self, now: float) -> Snapshot:
        """Return every aggregate, reading only small tables."""
        return self._reader.snapshot(now)

    def daily(self, days: int, now: float) -> list[DailyRow]:
        """Return the last `days` days of rollups, oldest first, with empty days filled in."""
        return self._reader.daily(days, now)

    def ready(self) -> bool:
        """Return whether the committer runs and the last write or probe succeeded."""
        return self._writer.healthy and self._committer.alive()

    def prune(self, before: float) -> int:
        """Delete users not seen since `before`, one id slice per transaction; event aggregates stay."""
        prune = self._writer.prune_slice
        return sum(self._committer.run(partial(prune, before, lo, hi)) for lo, hi in prune_slices())

    def key_fingerprint(self, fingerprint: str) -> str:
        """Store the user-id key's fingerprint the first time; return the one the store holds."""
        return self._committer.run(partial(self._writer.key_fingerprint, fingerprint))

    def observe_commits(self, callback: CommitObserver) -> None:
        """Call callback(records, seconds) after every group commit (for the commit metrics)."""
        self._writer.on_commit = callback

    def user_count(self) -> int:
        """Return the number of per-user rows (a scan: for tests and benchmarks, not for serving)."""
        return self._reader.user_count()

    def close(self) -> None:
        """Commit what is queued, stop the committer and close every connection."""
        self._committer.close()
        self._reader.close()
