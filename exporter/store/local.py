"""The Store in one process: a committer thread drives the SQL writer, a pool serves the reads."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

from exporter.errors import StoreError
from exporter.store.base import CommitObserver, DailyRow, Record, Snapshot, WriteResult
from exporter.store.commit import GATHER_DELAY, GroupCommitter
from exporter.store.readers import Reader
from exporter.store.sql import Backend, Writer, prune_slices


class LocalStore:
    """The Store contract (see base.Store) with commits on a thread of this process.

    `arrivals` is the committer's gather hint; None when the store was opened read-only.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_versions: int = 100,
        dedup_window: int = 172800,
        read_connections: int = 4,
        clock: Callable[[], float] = time.time,
        on_commit: CommitObserver | None = None,
        read_only: bool = False,
        gather_delay: float = GATHER_DELAY,
    ) -> None:
        self.dedup_window = dedup_window
        self._reader = Reader(backend, connections=read_connections)
        self._writer: Writer | None = None
        self._committer: GroupCommitter | None = None
        if not read_only:
            backend.prepare()
            self._writer = Writer(
                backend, max_versions=max_versions, dedup_window=dedup_window, on_commit=on_commit
            )
            self._committer = GroupCommitter(self._writer, clock, gather_delay=gather_delay)
            self._committer.start()
        self.arrivals: GroupCommitter | None = self._committer

    def write(self, records: Sequence[Record]) -> WriteResult:
        """Commit records together with concurrent callers; durable at return (see base.Store)."""
        if not records:
            return WriteResult([])
        return self._writing()[0].write(records)

    def snapshot(self, now: float) -> Snapshot:
        """Return every aggregate, reading only small tables."""
        return self._reader.snapshot(now)

    def daily(self, days: int, now: float) -> list[DailyRow]:
        """Return the last `days` days of rollups, oldest first, with empty days filled in."""
        return self._reader.daily(days, now)

    def ready(self) -> bool:
        """Return whether the committer runs and the last write or probe succeeded."""
        return (
            self._writer is not None
            and self._committer is not None
            and self._writer.healthy
            and self._committer.alive()
        )

    def prune(self, before: float) -> int:
        """Delete users not seen since `before`, one id slice per transaction; event aggregates stay."""
        committer, writer = self._writing()
        return sum(committer.run(partial(writer.prune_slice, before, lo, hi)) for lo, hi in prune_slices())

    def key_fingerprint(self, fingerprint: str) -> str:
        """Store the user-id key's fingerprint the first time; return the one the store holds."""
        committer, writer = self._writing()
        return committer.run(partial(writer.key_fingerprint, fingerprint))

    def observe_commits(self, callback: CommitObserver) -> None:
        """Call callback(records, seconds) after every group commit (for the commit metrics)."""
        if self._writer is not None:
            self._writer.on_commit = callback

    def user_count(self) -> int:
        """Return the number of per-user rows (a scan: for tests and benchmarks, not for serving)."""
        return self._reader.user_count()

    def close(self) -> None:
        """Commit what is queued, stop the committer and close every connection."""
        if self._committer is not None:
            self._committer.close()
        self._reader.close()

    def _writing(self) -> tuple[GroupCommitter, Writer]:
        """Return the committer and its writer, refusing writes to a store opened read-only."""
        if self._committer is None or self._writer is None:
            raise StoreError("this store was opened read-only")
        return self._committer, self._writer
