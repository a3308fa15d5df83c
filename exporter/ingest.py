"""Ingest: one request's bytes become keyed-hash records, are committed to the store, and are counted.

`Ingestor.ingest` is the one entry point the HTTP resource calls. It is also the one place where an
event or a request is counted as rejected: every rejection goes through `Metrics.count_rejection`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.errors import InvalidEvent, StoreUnavailable, TelemetryError
from exporter.metrics import Metrics
from exporter.normalize import Event, normalize
from exporter.store import Arrivals, Record, Store
from exporter.store.base import dedup_stamp
from exporter.wire import Readable, check_content_type, parse_json, read_body, split_batch

OK_BODY = b'{"status": "ok"}'  # what the reference server answers to one event; the same bytes every time


@dataclass(frozen=True)
class Upload:
    """A POST /v1/events as the HTTP layer received it."""

    content_type: str | None
    content_length: int | None
    content_encoding: str | None
    body: Readable


@dataclass(frozen=True)
class Reply:
    """What to answer: an HTTP status and a JSON body."""

    status: int
    data: bytes


OK_REPLY = Reply(200, OK_BODY)  # frozen, so one shared instance serves every single-event request


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


def record_of(hasher: UserHasher, event: Event, now: float) -> Record:
    """Build the store record of an event received at `now`."""
    user = hasher(event.user_id)
    return Record(
        user, event.type, event.version, event.os, event.arch, event.success, now, dedup_key(user, event)
    )


def invalid_batch(body: dict[str, Any]) -> dict[str, Any]:
    """Return the 400 body for a batch in which no event is valid."""
    return {
        "title": "Invalid batch",
        "description": "no event in the batch is valid; see rejected[] for each reason",
        "reason": "invalid_batch",
        **body,
    }


class Ingestor:
    """Decodes, validates and commits events, counting every rejection by reason."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        hasher: UserHasher,
        clock: Callable[[], float],
        *,
        max_body_bytes: int,
        max_batch: int,
        arrivals: Arrivals | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.hasher = hasher
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.arrivals = arrivals

    def ingest(self, upload: Upload) -> Reply:
        """Answer one POST /v1/events; 2xx only once its events are durable.

        Raises a TelemetryError (already counted) when the whole request is refused: bad bytes, a single
        invalid event, an oversized batch, or a store that cannot commit (StoreUnavailable).
        """
        try:
            records, rejected, is_batch = self._prepare(upload)
        except TelemetryError as exc:
            self.metrics.count_rejection(exc.reason)
            raise
        if rejected:  # counted before the commit, which may still fail for the valid ones
            for reason, count in Counter(item["reason"] for item in rejected).items():
                self.metrics.count_rejection(reason, count)
        counted = self._commit(records)
        if not is_batch:
            return OK_REPLY
        body = {"accepted": counted, "duplicates": len(records) - counted, "rejected": rejected}
        if not records:
            return Reply(400, json.dumps(invalid_batch(body)).encode())
        return Reply(200, json.dumps(body).encode())

    def _prepare(self, upload: Upload) -> tuple[list[Record], list[dict[str, Any]], bool]:
        """Decode and validate: the valid events' records, the rejected items, and whether it is a batch."""
        if self.arrivals is not None:
            self.arrivals.announce()  # group commit may wait a moment for this request's records
        try:
            check_content_type(upload.content_type)
            body = read_body(upload.body, upload.content_length, upload.content_encoding, self.max_body_bytes)
            items, is_batch = split_batch(parse_json(body), self.max_batch)
            if not is_batch:
                return self._records([normalize(items[0])]), [], False
            events, rejected = validate_batch(items)
            return self._records(events), rejected, True
        finally:
            if self.arrivals is not None:
                self.arrivals.withdraw()

    def _records(self, events: Sequence[Event]) -> list[Record]:
        """Build the events' records at the server's receive time, observing their clock skew."""
        now = self.clock()
        hasher = self.hasher
        self.metrics.clock_skew.observe_many(
            [abs(now - event.client_time_ns / 1e9) for event in events if event.client_time_ns is not None]
        )
        return [record_of(hasher, event, now) for event in events]

    def _commit(self, records: list[Record]) -> int:
        """Write records to the store; return how many were counted (the rest were duplicates)."""
        if not records:
            return 0
        try:
            result = self.store.write(records)
        except StoreUnavailable:
            self.metrics.count_rejection("store_unavailable", len(records))
            self.metrics.store_errors.labels("write").inc()
            raise
        counted = sum(result.counted)
        if counted < len(records):
            self.metrics.duplicates.inc(len(records) - counted)
        for label, count in result.overflow.items():
            self.metrics.overflow.labels(label).inc(count)
        return counted


def validate_batch(items: Sequence[Any]) -> tuple[list[Event], list[dict[str, Any]]]:
    """Normalize each item of a batch: the valid events, and each invalid one's index and reason."""
    events: list[Event] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            events.append(normalize(item))
        except InvalidEvent as exc:
            rejected.append(
                {"index": index, "reason": exc.reason, "field": exc.field, "description": exc.description}
            )
    return events, rejected
