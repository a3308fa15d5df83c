"""Bytes to JSON: content types, limits, streaming gzip and strict parsing."""

from __future__ import annotations

import gzip
import io
import zlib

import pytest

from exporter.errors import (
    BadEncoding,
    BatchTooLarge,
    BodyTooLarge,
    InvalidEvent,
    InvalidJSON,
    TelemetryError,
    UnsupportedEncoding,
    UnsupportedMediaType,
)
from exporter.wire import check_content_type, parse_json, read_body, split_batch

LIMIT = 1024 * 1024


class CountingStream(io.BytesIO):
    """A stream that remembers how many bytes were read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk


@pytest.mark.parametrize(
    "ctype", ["application/json", "application/json; charset=utf-8", "application/cloudevents+json", None, ""]
)
def test_json_content_types_pass(ctype: str | None) -> None:
    check_content_type(ctype)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_other_content_types_are_415(ctype: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        check_content_type(ctype)
    assert info.value.status == 415


def test_declared_length_over_limit_is_rejected_before_reading() -> None:
    stream = CountingStream(b"x" * 10)
    with pytest.raises(BodyTooLarge):
        read_body(stream, LIMIT + 1, None, LIMIT)
    assert stream.consumed == 0


def test_undeclared_length_over_limit() -> None:
    with pytest.raises(BodyTooLarge):
        read_body(io.BytesIO(b"x" * (LIMIT + 10)), None, None, LIMIT)


def test_gzip_roundtrip() -> None:
    body = b'{"a": 1}' * 100
    assert read_body(io.BytesIO(gzip.compress(body)), None, "gzip", LIMIT) == body


def test_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    stream = CountingStream(bomb)
    with pytest.raises(BodyTooLarge):
        read_body(stream, len(bomb), "gzip", LIMIT)
    assert stream.consumed <= 128 * 1024, "must stop reading soon after the output passes the limit"


def test_truncated_gzip() -> None:
    data = gzip.compress(b'{"type": "heartbeat"}' * 50)
    with pytest.raises(BadEncoding, match="truncated"):
        read_body(io.BytesIO(data[: len(data) // 2]), None, "gzip", LIMIT)


def test_corrupt_gzip() -> None:
    with pytest.raises(BadEncoding):
        read_body(io.BytesIO(b"\x1f\x8b\x08\x00garbage-garbage"), None, "gzip", LIMIT)


def test_unknown_encoding_is_415() -> None:
    with pytest.raises(UnsupportedEncoding) as info:
        read_body(io.BytesIO(zlib.compress(b"{}")), None, "br", LIMIT)
    assert info.value.status == 415


HOSTILE = {
    "empty": (b"", InvalidJSON),
    "not json": (b"hello", InvalidJSON),
    "truncated": (b'{"type": "heart', InvalidJSON),
    "invalid utf-8": (b'{"type": "\xff\xfe"}', BadEncoding),
    "utf-8 bom": (b'\xef\xbb\xbf{"type": "heartbeat"}', BadEncoding),
    "utf-16": ('{"type": "x"}'.encode("utf-16"), BadEncoding),
    "NaN": (b'{"x": NaN}', InvalidJSON),
    "Infinity": (b'{"x": -Infinity}', InvalidJSON),
    "float overflow": (b'{"x": 1e999}', InvalidJSON),
    "million digits": (b'{"x": ' + b"9" * 1_000_000 + b"}", InvalidJSON),
    "5000-deep nesting": (b"[" * 5000 + b"]" * 5000, InvalidJSON),
    "5000-deep objects": (b'{"a":' * 5000 + b"1" + b"}" * 5000, InvalidJSON),
    "duplicate keys": (b'{"type": "heartbeat", "type": "deployment"}', InvalidJSON),
}


@pytest.mark.parametrize(("body", "error"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_json_is_a_4xx(body: bytes, error: type[TelemetryError]) -> None:
    with pytest.raises(error) as info:
        parse_json(body)
    assert 400 <= info.value.status < 500
    assert info.value.description


BATCHES = {
    "single object": ({"type": "heartbeat"}, 1, False),
    "array": ([{"type": "a"}, {"type": "b"}], 2, True),
    "events key": ({"events": [{"type": "a"}]}, 1, True),
}


@pytest.mark.parametrize(("doc", "count", "is_batch"), BATCHES.values(), ids=BATCHES.keys())
def test_split_batch(doc: object, count: int, is_batch: bool) -> None:
    items, batch = split_batch(doc, 100)
    assert (len(items), batch) == (count, is_batch)


def test_batch_over_the_limit() -> None:
    with pytest.raises(BatchTooLarge):
        split_batch([{}] * 101, 100)


@pytest.mark.parametrize("doc", [[], {"events": []}, {"events": "x"}])
def test_empty_or_malformed_batch(doc: object) -> None:
    with pytest.raises(InvalidEvent):
        split_batch(doc, 100)
