"""Group commit: callers queue their records, one thread commits everything waiting in one transaction."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from itertools import takewhile
from typing import Any, Protocol, TypeVar

from exporter.errors import StoreUnavailable
from exporter.store.base import Record, WriteResult

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_COMMIT_RECORDS = 2000  # most records one transaction takes (a single larger write still goes alone)
GATHER_DELAY = 0.002  # most a waiting commit holds for requests still being parsed (seconds)


def first_group(sizes: Iterable[int], budget: int = MAX_COMMIT_RECORDS) -> int:
    """Return how many leading writes commit together: the first always, then while the total fits."""
    taken = total = 0
    for size in sizes:
        if taken and total + size > budget:
            break
        taken += 1
        total += size
    return taken


class CommitTarget(Protocol):
    """What the committer drives (the SQL Writer); called from the committer's thread only."""

    def commit(self, groups: Sequence[Sequence[Record]], now: float) -> list[WriteResult]:
        """Commit the groups in one transaction; one result per group."""
        ...

    def upkeep(self, now: float) -> None:
        """Do the between-commits work."""
        ...

    def close(self) -> None:
        """Release the write connection."""
        ...


class _Job:
    """Records waiting for the next group commit, or a maintenance call, and the future answering it."""

    __slots__ = ("future", "records", "task")

    def __init__(self, records: Sequence[Record] = (), task: Callable[[], Any] | None = None) -> None:
        self.records = records
        self.task = task
        self.future: Future[Any] = Future()


class GroupCommitter:
    """A queue and the one thread that empties it. Thread-safe; also the store's Arrivals hint."""

    probe_interval = 1.0  # seconds an idle committer waits before upkeep

    def __init__(
        self,
        target: CommitTarget,
        clock: Callable[[], float],
        *,
        gather_delay: float = GATHER_DELAY,
        write_timeout: float = 30.0,
    ) -> None:
        self.target = target
        self.clock = clock
        self.gather_delay = gather_delay
        self.write_timeout = write_timeout
        self._jobs: list[_Job] = []
        self._arriving = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)

    def start(self) -> None:
        """Start the committer thread."""
        self._thread.start()

    def alive(self) -> bool:
        """Return whether the committer takes work."""
        return not self._closing and self._thread.is_alive()

    def write(self, records: Sequence[Record]) -> WriteResult:
        """Queue records for the next group commit and wait until they are durable."""
        result: WriteResult = self._submit(_Job(records=records))
        return result

    def run(self, task: Callable[[], T]) -> T:
        """Run a maintenance call on the committer thread, between commits, and return its value."""
        value: T = self._submit(_Job(task=task))
        return value

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

    def close(self) -> None:
        """Commit what is queued, then stop the thread and release the target."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=self.write_timeout)

    def _submit(self, job: _Job) -> Any:
        """Queue a job and wait for its answer."""
        with self._cond:
            if self._closing:
                raise StoreUnavailable("the server is shutting down; retry later")
            self._jobs.append(job)
            self._cond.notify()
        try:
            return job.future.result(timeout=self.write_timeout)
        except TimeoutError:
            raise StoreUnavailable("the store did not commit in time; retry later") from None

    def _loop(self) -> None:
        """Take every waiting job, commit them together, answer each; upkeep when idle."""
        while True:
            with self._cond:
                if not self._jobs and not self._closing:
                    self._cond.wait(timeout=self.probe_interval)
                self._gather()
                jobs = self._take()
                closing = self._closing
            if jobs:
                self._answer(jobs)
            elif closing:
                break
            else:
                self.target.upkeep(self.clock())
        self.target.close()

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
            if left <= 0 or sum(len(job.records) for job in self._jobs) >= MAX_COMMIT_RECORDS:
                return
            self._cond.wait(timeout=left)

    def _take(self) -> list[_Job]:
        """Pop the next commit's jobs: one maintenance call alone, or writes up to the record budget."""
        if not self._jobs:
            return []
        if self._jobs[0].task is not None:
            return [self._jobs.pop(0)]
        writes = takewhile(lambda job: job.task is None, self._jobs)
        count = first_group(len(job.records) for job in writes)
        taken, self._jobs = self._jobs[:count], self._jobs[count:]
        return taken

    def _answer(self, jobs: list[_Job]) -> None:
        """Run one commit (or maintenance call) and resolve each job's future."""
        try:
            task = jobs[0].task
            if task is not None:
                jobs[0].future.set_result(task())
                return
            results = self.target.commit([job.records for job in jobs], self.clock())
        except Exception as exc:
            if not isinstance(exc, StoreUnavailable):
                log.exception("store commit failed unexpectedly")
            for job in jobs:
                job.future.set_exception(exc)
            return
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)
