"""The Store contract callers rely on, and the values it takes and returns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from exporter.store.planner import Key, Record, UserRow

SCHEMA_VERSION = 3
WINDOWS = {"1d": 24, "7d": 24 * 7, "30d": 24 * 30}  # window label -> hours
CommitObserver = Callable[[int, float], None]  # (records committed, seconds the commit took)


@dataclass
class WriteResult:
    """Per record: True when counted, False when it was a duplicate; plus label overflows."""

    counted: list[bool]
    overflow: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class DailyRow:
    """One day of rollups."""

    day: str
    deployments_success: int
    deployments_failure: int
    configs: int
    new_users: int
    active_by_version: dict[str, int]
    heartbeats: int = 0  # CLI runs that UTC day

    @property
    def active_users(self) -> int:
        """Return the users active that day (the sum of active_by_version)."""
        return sum(self.active_by_version.values())


@dataclass(frozen=True)
class Snapshot:
    """The store's aggregates at one moment: everything /metrics, /stats and / need, with no user scan."""

    counters: dict[Key, int]
    active: dict[str, int]
    active_by_version: dict[tuple[str, str], int]
    # (cohort week index, weeks since the cohort k) -> users of the cohort with an accepted event in week
    # cohort + k (server time); k = 0 is the cohort's size. From the small `cohorts` table, never a user scan.
    cohorts: Mapping[tuple[int, int], int] = field(default_factory=dict)

    def family(self, name: str) -> dict[tuple[str, str, str], int]:
        """Return one counter family keyed by its three label values."""
        return {key[1:]: value for key, value in self.counters.items() if key[0] == name and value}

    def total(self, name: str) -> int:
        """Return the sum of one family."""
        return sum(value for key, value in self.counters.items() if key[0] == name)


class Arrivals(Protocol):
    """A group-commit hint: requests carrying records are being parsed. Thread-safe; calls pair up."""

    def announce(self) -> None:
        """Note that a request with records is on its way (a waiting commit may hold briefly for it)."""
        ...

    def withdraw(self) -> None:
        """End one announce(): the request's records are ready, or it has none."""
        ...


class Store(Protocol):
    """A durable event store, shared by every request thread.

    Every method may be called from any thread, concurrently, until close(). Errors: StoreUnavailable
    (a TelemetryError answered as 503 with retry advice) means the store cannot serve the call now and
    nothing of a failed write was applied; StoreError means the store cannot be used as configured.
    """

    @property
    def arrivals(self) -> Arrivals | None:
        """The group-commit hint, when this store's committer uses one (None: nothing to announce)."""
        ...

    def write(self, records: Sequence[Record]) -> WriteResult:
        """Apply the records' effects, in one transaction shared with concurrent callers (group commit).

        Durable at return: committed, and survives kill -9. Raises StoreUnavailable when the store
        cannot commit (nothing of the call was applied) or is closing.
        """
        ...

    def snapshot(self, now: float) -> Snapshot:
        """Return every aggregate as of `now`, reading only small tables (never per-user rows).

        Sees every write that returned before the call. Raises StoreUnavailable.
        """
        ...

    def daily(self, days: int, now: float) -> list[DailyRow]:
        """Return the last `days` days of rollups up to `now`, oldest first. Raises StoreUnavailable."""
        ...

    def ready(self) -> bool:
        """Return whether the store takes writes now; cheap (used by /readyz); never raises."""
        ...

    def prune(self, before: float) -> int:
        """Delete per-user rows not seen since `before`, keeping every aggregate; return how many.

        Runs in short slices between writes; each slice is durable when it ends. Raises StoreUnavailable.
        """
        ...

    def key_fingerprint(self, fingerprint: str) -> str:
        """Store the user-id key's fingerprint the first time; return the one stored (durable at return).

        Raises StoreUnavailable.
        """
        ...

    def observe_commits(self, callback: CommitObserver) -> None:
        """Call callback(records, seconds) after each group commit, from the store's own thread.

        Replaces any earlier callback; the callback must be quick and must not call the store.
        """
        ...

    def close(self) -> None:
        """Commit what is queued, then release every connection; the store is unusable afterwards.

        Call once, after the last write; idempotent.
        """
        ...


def dedup_stamp(ns: int) -> bytes:
    """Return the 8-byte, order-preserving prefix of a dedup key: the client's time in nanoseconds."""
    return min(max(ns, 0), 2**64 - 1).to_bytes(8, "big")


__all__ = [
    "SCHEMA_VERSION",
    "WINDOWS",
    "Arrivals",
    "CommitObserver",
    "DailyRow",
    "Key",
    "Record",
    "Snapshot",
    "Store",
    "UserRow",
    "WriteResult",
    "dedup_stamp",
]
