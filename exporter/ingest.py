"""Ingest: normalized events become keyed-hash records, are committed to the store, and are counted."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.errors import InvalidEvent, StoreUnavailable
from exporter.metrics import Metrics
from exporter.normalize import Event, normalize
from exporter.store import Record, Store
from exporter.store.base import dedup_stamp


@dataclass
class Outcome:
    """What happened to each item of a request."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the batch reply body."""
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


class UserHasher:
    """Re-hashes client user ids with a keyed HMAC, so the store never holds an id as received."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        # HMAC's inner and outer hashes after the padded key, computed once (RFC 2104): each id then
        # costs two C-level hash copies instead of building a new hmac object.
        block = key if len(key) <= 64 else hashlib.sha256(key).digest()
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __call__(self, user_id: str) -> bytes:
        """Return the 16-byte keyed hash of a user id: HMAC-SHA256, truncated."""
        inner = self._inner.copy()
        inner.update(user_id.encode("ascii"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:16]

    def fingerprint(self) -> str:
        """Return a public fingerprint of the key, to detect replicas or restarts with another key."""
        return hmac.new(self._key, b"flakedrop-telemetry key fingerprint", hashlib.sha256).hexdigest()[:16]


def dedup_key(user: bytes, event: Event) -> bytes | None:
    """Return the identity of an event for dedup: its id, else user+type+client timestamp.

    The key is the client's timestamp in nanoseconds (0 when it sent none), big-endian, then 8 bytes of
    hash: keys of recent events arrive nearly in order, so a commit appends to the end of the dedup
    index instead of dirtying a random page per event, and expired keys are a prefix of the index.
    """
    if event.event_id is not None:
        material = b"id\0" + event.event_id.encode("ascii")
    elif event.client_time_ns is not None:
        material = b"ts\0" + event.type.encode("ascii") + b"\0" + str(event.client_time_ns).encode("ascii")
    else:
        return None
    return dedup_stamp(event.client_time_ns or 0) + hashlib.blake2b(user + material, digest_size=8).digest()


class Ingestor:
    """Normalizes, records and commits events, counting every rejection by reason."""

    def __init__(
        self, store: Store, metrics: Metrics, hasher: UserHasher, clock: Callable[[], float]
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.hasher = hasher
        self.clock = clock

    @staticmethod
    def record_of(hasher: UserHasher, event: Event, now: float) -> Record:
        """Build the store record of an event received at `now`."""
        user = hasher(event.user_id)
        return Record(
            user, event.type, event.version, event.os, event.arch, event.success, now, dedup_key(user, event)
        )

    def ingest_one(self, item: Any) -> bool:
        """Ingest a single event; raise InvalidEvent or StoreUnavailable; return False for a duplicate."""
        return self.commit_one(self.prepare_one(item))

    def ingest_batch(self, items: Sequence[Any]) -> Outcome:
        """Ingest a batch: invalid items are reported by index, the valid ones committed together."""
        return self._commit(*self.prepare_batch(items))

    def prepare_one(self, item: Any) -> Record:
        """Validate one event and build its record; raise InvalidEvent (counted by reason)."""
        try:
            event = normalize(item)
        except InvalidEvent as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            exc.counted = True  # type: ignore[attr-defined]
            raise
        now = self.clock()
        if event.client_time_ns is not None:
            self.metrics.clock_skew.observe(abs(now - event.client_time_ns / 1e9))
        return self.record_of(self.hasher, event, now)

    def commit_one(self, record: Record) -> bool:
        """Commit one prepared record; return False for a duplicate."""
        return self._commit([record], [0], Outcome()).accepted == 1

    def prepare_batch(self, items: Sequence[Any]) -> tuple[list[Record], list[int], Outcome]:
        """Validate a batch: the valid items' records and indices, and the rejections so far."""
        now = self.clock()
        outcome = Outcome()
        records, indices, skews = [], [], []
        hasher = self.hasher
        for index, item in enumerate(items):
            try:
                event = normalize(item)
            except InvalidEvent as exc:
                self.metrics.rejected.labels(exc.reason).inc()
                outcome.rejected.append(
                    {"index": index, "reason": exc.reason, "field": exc.field, "description": exc.description}
                )
                continue
            if event.client_time_ns is not None:
                skews.append(abs(now - event.client_time_ns / 1e9))
            records.append(self.record_of(hasher, event, now))
            indices.append(index)
        self.metrics.clock_skew.observe_many(skews)
        return records, indices, outcome

    def commit_batch(self, prepared: tuple[list[Record], list[int], Outcome]) -> Outcome:
        """Commit a prepared batch and complete its outcome."""
        return self._commit(*prepared)

    def _commit(self, records: list[Record], indices: list[int], outcome: Outcome) -> Outcome:
        """Write records to the store and count the result."""
        if not records:
            return outcome
        try:
            result = self.store.write(records)
        except StoreUnavailable:
            self.metrics.rejected.labels("store_unavailable").inc(len(records))
            self.metrics.store_errors.labels("write").inc()
            raise
        counted = sum(result.counted)
        outcome.accepted += counted
        outcome.duplicates += len(records) - counted
        if outcome.duplicates:
            self.metrics.duplicates.inc(len(records) - counted)
        for label, count in result.overflow.items():
            self.metrics.overflow.labels(label).inc(count)
        return outcome
