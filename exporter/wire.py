"""Bytes to JSON: content type, bounded reads, streaming gzip, and strict JSON parsing."""

from __future__ import annotations

import json
import math
import zlib
from typing import Any, Protocol

from exporter.errors import (
    BadEncoding,
    BatchTooLarge,
    BodyTooLarge,
    InvalidEvent,
    InvalidJSON,
    UnsupportedEncoding,
    UnsupportedMediaType,
)

CHUNK = 64 * 1024


class Readable(Protocol):
    """A request body stream: anything with read(size) -> bytes (Falcon's BoundedStream, BytesIO)."""

    def read(self, size: int = -1, /) -> bytes:
        """Return up to size bytes; b"" at the end."""
        ...


def check_content_type(content_type: str | None) -> None:
    """Accept application/json and any +json type (or no type at all); reject the rest with 415."""
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType(
        f"Content-Type {media!r} is not accepted; send the events as application/json", field="Content-Type"
    )


def read_body(stream: Readable, content_length: int | None, encoding: str | None, limit: int) -> bytes:
    """Read the request body, gunzipping as a stream, never holding more than limit bytes."""
    if content_length is not None and content_length > limit:
        raise BodyTooLarge(
            f"the body is {content_length} bytes; the limit is {limit} bytes (send smaller batches)",
            field="Content-Length",
        )
    coding = (encoding or "identity").strip().lower()
    if coding in ("identity", ""):
        data = stream.read(limit + 1)
        if len(data) > limit:
            raise BodyTooLarge(f"the body is over the limit of {limit} bytes (send smaller batches)")
        return data
    if coding not in ("gzip", "x-gzip"):
        raise UnsupportedEncoding(
            f"Content-Encoding {coding!r} is not supported; use gzip or none", field="Content-Encoding"
        )
    return _gunzip(stream, limit)


def _gunzip(stream: Readable, limit: int) -> bytes:
    """Inflate a gzip stream chunk by chunk, stopping as soon as the output passes the limit."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    read_compressed = 0
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        read_compressed += len(chunk)
        if read_compressed > limit:
            raise BodyTooLarge(f"the compressed body is over the limit of {limit} bytes")
        try:
            while chunk:
                out += inflater.decompress(chunk, limit + 1 - len(out))
                if len(out) > limit:
                    raise BodyTooLarge(
                        f"the body inflates past the limit of {limit} bytes (send smaller batches)"
                    )
                chunk = inflater.unconsumed_tail
                if inflater.eof:
                    break
        except zlib.error as exc:
            raise BadEncoding(f"the gzip body is corrupt: {exc}", field="Content-Encoding") from None
        if inflater.eof:
            break
    if not inflater.eof:
        raise BadEncoding("the gzip body is truncated", field="Content-Encoding")
    return bytes(out)


def _reject_constant(name: str) -> Any:
    """Refuse NaN and Infinity, which are not JSON."""
    raise InvalidJSON(f"{name} is not valid JSON; send a finite number")


def _finite_float(text: str) -> float:
    """Parse a JSON number, refusing ones that overflow to infinity."""
    value = float(text)
    if math.isinf(value):
        raise InvalidJSON(f"the number {text[:20]}... is too large")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build an object, refusing duplicate keys (their meaning is ambiguous)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidJSON(f"the key {key[:64]!r} appears twice in one object", field=key[:64])
            seen.add(key)
    return obj


def parse_json(body: bytes) -> Any:
    """Parse strict UTF-8 JSON, turning every failure into a 4xx error."""
    if not body:
        raise InvalidJSON("the body is empty; send one event object or a batch")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadEncoding(f"the body is not valid UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):
        raise BadEncoding("the body starts with a byte order mark; send UTF-8 without a BOM")
    try:
        return json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise InvalidJSON(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidJSON("the JSON is nested too deeply") from None
    except ValueError as exc:  # int() refuses numbers of over 4300 digits
        raise InvalidJSON(f"the JSON holds an unusable number: {str(exc)[:120]}") from None


def split_batch(document: Any, max_batch: int) -> tuple[list[Any], bool]:
    """Return (events, is_batch) for a single event, a JSON array, or {"events": [...]}."""
    if isinstance(document, list):
        items = document
    elif isinstance(document, dict) and "events" in document and "type" not in document:
        items = document["events"]
        if not isinstance(items, list):
            raise InvalidEvent("invalid_field", "events", "must be an array of events")
    else:
        return [document], False
    if not items:
        raise InvalidEvent("invalid_field", "events", "the batch is empty; send at least one event")
    if len(items) > max_batch:
        raise BatchTooLarge(
            f"the batch holds {len(items)} events; the most is {max_batch} (split it)", field="events"
        )
    return items, True
