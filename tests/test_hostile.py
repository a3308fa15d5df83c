"""A fixed hostile corpus against the real server over raw sockets: each gets a clear 4xx, and the server lives."""

from __future__ import annotations

import gzip
import json
import random
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import Server, http
from test_openapi import assert_documented
from wire_samples import HEARTBEAT, USER

from exporter.normalize import GOARCH, GOOS

pytestmark = pytest.mark.slow

CHANNEL_TIMEOUT = 2
LIMIT = 1024 * 1024  # --max-body-bytes default
WAITRESS_LIMIT = LIMIT + 64 * 1024  # exporter.server.waitress_options max_request_body_size
REJECTED: Counter[str] = Counter()  # reasons the corpus was answered with, for the final count check


def raw_request(
    port: int, head: bytes, body: bytes = b"", *, timeout: float = 30.0, half_close: bool = False
) -> bytes:
    """Send bytes on a fresh loopback connection and return everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head + body)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking all of it (e.g. waitress's 413)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def post_head(length: int | None, headers: dict[str, str] | None = None) -> bytes:
    """Build the request head of a POST /v1/events (Connection: close, so the reply ends with EOF)."""
    lines = [
        "POST /v1/events HTTP/1.1",
        "Host: 127.0.0.1",
        "Connection: close",
        "Content-Type: application/json",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Split the first HTTP response in data into status, headers (lower-cased names) and body."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return status, headers, rest[:length]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for the corpus, with a short channel timeout."""
    running = Server(
        tmp_path_factory.mktemp("hostile") / "data", "--channel-timeout", str(CHANNEL_TIMEOUT)
    ).wait_ready()
    yield running
    assert running.stop() == 0
    assert "Traceback" not in running.log_path.read_text()


def event_with(field: str, value: object) -> bytes:
    """A flat deployment with one field replaced."""
    event = {"type": "deployment", "user_id": USER, "version": "v1.3.0", "os": "linux", "arch": "amd64"}
    event.update({"success": True, "timestamp": "2026-11-27T09:15:02Z", "id": "ev-1", field: value})
    return json.dumps(event).encode()


def _deep_objects(depth: int) -> bytes:
    """depth nested objects."""
    return b'{"a":' * depth + b"1" + b"}" * depth


GZIP_BOMB = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
MILLION_DIGITS = b'{"type": "heartbeat", "n": ' + b"7" * 1_000_000 + b"}"
CORPUS: list[tuple[str, bytes, dict[str, str], int]] = [
    ("random bytes", random.Random(8).randbytes(4096), {}, 400),
    ("invalid UTF-8", b'{"type": "heartbeat", "user_id": "\xc3\x28"}', {}, 400),
    ("overlong UTF-8", b'{"type": "heartbeat", "x": "\xc0\xaf"}', {}, 400),
    ("lone surrogate bytes", b'{"type": "heartbeat", "x": "\xed\xa0\x80"}', {}, 400),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + HEARTBEAT, {}, 400),
    ("UTF-16 BOM", b"\xff\xfe" + HEARTBEAT.decode().encode("utf-16-le"), {}, 400),
    ("5,000-deep arrays", b"[" * 5000 + b"]" * 5000, {}, 400),
    ("5,000-deep objects", _deep_objects(5000), {}, 400),
    ("a million-digit integer", MILLION_DIGITS, {}, 400),
    ("a million-digit float", b'{"type": "heartbeat", "n": 1' + b"0" * 999_990 + b".5}", {}, 400),
    ("a huge exponent", b'{"type": "heartbeat", "n": 1e999999999}', {}, 400),
    ("NaN", b'{"type": "heartbeat", "n": NaN}', {}, 400),
    ("Infinity", b'{"type": "heartbeat", "n": Infinity}', {}, 400),
    ("-Infinity", b'{"type": "heartbeat", "n": -Infinity}', {}, 400),
    ("duplicate keys", b'{"type": "heartbeat", "type": "deployment"}', {}, 400),
    ("gzip bomb (64 MiB inflated)", GZIP_BOMB, {"Content-Encoding": "gzip"}, 413),
    ("truncated gzip", gzip.compress(HEARTBEAT)[:-12], {"Content-Encoding": "gzip"}, 400),
    ("not gzip at all", HEARTBEAT, {"Content-Encoding": "gzip"}, 400),
    ("unknown encoding", HEARTBEAT, {"Content-Encoding": "zstd"}, 415),
    ("a body over the limit", b" " * (LIMIT + 1000), {}, 413),
    ("a batch over the limit", json.dumps([json.loads(event_with("id", None))] * 101).encode(), {}, 413),
    ("a 10k type", event_with("type", "t" * 10_000), {}, 400),
    ("a 10k user_id", event_with("user_id", "a" * 10_000), {}, 400),
    ("a 10k timestamp", event_with("timestamp", "2" * 10_000), {}, 400),
    ("a 10k id", event_with("id", "i" * 10_000), {}, 400),
    ("a 10k success", event_with("success", "s" * 10_000), {}, 400),
    (
        "10k in every field",
        json.dumps({k: "x" * 10_000 for k in json.loads(event_with("id", 1))}).encode(),
        {},
        400,
    ),
]


@pytest.mark.parametrize(("name", "body", "headers", "status"), CORPUS, ids=[case[0] for case in CORPUS])
def test_hostile_body_gets_a_clear_4xx_with_a_json_body(
    server: Server, name: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    got, reply_headers, reply = parse_response(raw_request(server.port, post_head(len(body), headers), body))
    assert got == status, reply[:300]
    document = assert_documented("POST", "/v1/events", got, reply_headers, reply)
    assert document["title"] and document["description"]
    REJECTED[document["reason"]] += 1


@pytest.mark.parametrize(
    "field",
    ["version", "os", "arch", "data", "z" * 10_000],
    ids=["version", "os", "arch", "data", "a 10k key"],
)
def test_10k_strings_in_lenient_fields_are_accepted_but_bounded(server: Server, field: str) -> None:
    body = event_with(field, "z" * 10_000)
    got, reply_headers, reply = parse_response(raw_request(server.port, post_head(len(body)), body))
    assert got == 200, reply[:300]
    assert_documented("POST", "/v1/events", got, reply_headers, reply)
    metrics = http("GET", server.url + "/metrics")[1].decode()
    assert "z" * 100 not in metrics, "a 10k string became a label value"


def test_content_length_shorter_than_the_body(server: Server) -> None:
    body = HEARTBEAT
    data = raw_request(server.port, post_head(10), body)
    got, reply_headers, reply = parse_response(data)
    assert got == 400  # the first 10 bytes are broken JSON; the rest is not read as this request's body
    document = assert_documented("POST", "/v1/events", got, reply_headers, reply)
    REJECTED[document["reason"]] += 1
    assert b" 500 " not in data and b" 503 " not in data


def test_content_length_longer_than_the_body_is_cut_off_not_hung(server: Server) -> None:
    body = HEARTBEAT
    started = time.monotonic()
    data = raw_request(server.port, post_head(len(body) + 100), body, timeout=10 * CHANNEL_TIMEOUT + 30)
    waited = time.monotonic() - started
    # waitress never hands a partial body to the app: it closes the channel after --channel-timeout
    assert data == b"", data[:300]
    print(f"Content-Length +100: closed after {waited:.1f} s (channel timeout {CHANNEL_TIMEOUT} s)")


def test_content_length_longer_with_a_half_close_gets_no_5xx(server: Server) -> None:
    body = HEARTBEAT
    data = raw_request(server.port, post_head(len(body) + 100), body, half_close=True)
    assert b" 5" not in data.split(b"\r\n", 1)[0]


def _chunked(total: int, size: int = 64 * 1024) -> bytes:
    """A chunked body of total space bytes (valid JSON whitespace), in size-byte chunks."""
    out = bytearray()
    left = total
    while left:
        n = min(size, left)
        out += f"{n:x}\r\n".encode() + b" " * n + b"\r\n"
        left -= n
    return bytes(out + b"0\r\n\r\n")


def test_chunked_body_over_the_app_limit_gets_a_json_413(server: Server) -> None:
    body = _chunked(LIMIT + 1000)
    data = raw_request(server.port, post_head(None, {"Transfer-Encoding": "chunked"}), body)
    got, reply_headers, reply = parse_response(data)
    assert got == 413
    document = assert_documented("POST", "/v1/events", got, reply_headers, reply)
    REJECTED[document["reason"]] += 1


def _waitress_refusal(data: bytes, status: int, reason: str) -> None:
    """Check one of waitress's own refusals: our JSON error body, the reason, and count it as expected."""
    got, headers, reply = parse_response(data)
    assert got == status, reply[:300]
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    document = json.loads(reply)
    assert document["reason"] == reason and document["description"], document
    REJECTED[reason] += 1


def test_chunked_body_over_the_waitress_limit_is_refused_before_the_app(server: Server) -> None:
    body = _chunked(8 * LIMIT)
    data = raw_request(server.port, post_head(None, {"Transfer-Encoding": "chunked"}), body)
    _waitress_refusal(data, 413, "body_too_large")  # waitress stops reading and closes


def test_content_length_over_the_waitress_limit_is_refused_before_the_body(server: Server) -> None:
    data = raw_request(server.port, post_head(WAITRESS_LIMIT + 1), b"{")
    _waitress_refusal(data, 413, "body_too_large")


def test_oversized_headers_are_refused(server: Server) -> None:
    head = post_head(2, {"X-Padding": "p" * (128 * 1024)})
    _waitress_refusal(raw_request(server.port, head, b"{}"), 431, "headers_too_large")


def test_malformed_request_line_is_refused_as_json(server: Server) -> None:
    data = raw_request(server.port, b"POST /v1/events HTTP/1.1\r\nContent-Length: abc\r\n\r\n", b"")
    _waitress_refusal(data, 400, "bad_http")


def test_after_the_corpus_the_server_is_healthy_and_counted_every_rejection(server: Server) -> None:
    assert http("GET", server.url + "/healthz")[0] == 200
    assert http("GET", server.url + "/readyz")[0] == 200
    body = json.dumps({"type": "heartbeat", "user_id": "b" * 32, "version": "v1.3.0"}).encode()
    assert http("POST", server.url + "/v1/events", body, {"Content-Type": "application/json"})[0] == 200
    metrics = http("GET", server.url + "/metrics")[1].decode()
    counted = {
        line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("flakedrop_events_rejected_total{")
    }
    for reason, seen in REJECTED.items():
        assert counted.get(reason, 0) >= seen, (reason, counted)
    if REJECTED:
        assert sum(counted.values()) >= sum(REJECTED.values())
    print(f"rejections answered {dict(REJECTED)}; counted {counted}")


def _own_rss_kib(pid: int) -> int:
    """Return one process's resident set size (VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def rss_kib(pid: int) -> int:
    """Return the VmRSS in KiB of a server process plus its children (the store's writer process)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return _own_rss_kib(pid) + sum(_own_rss_kib(child) for child in children)


STORE_FAMILIES = (
    "flakedrop_deployments_total",
    "flakedrop_configs_created_total",
    "flakedrop_heartbeats_total",
)
STORE_FAMILIES += ("flakedrop_users{", "flakedrop_active_users_by_version")


def label_values(metrics: str, label: str) -> set[str]:
    """Return every value a label takes in the store-backed families on a /metrics page."""
    lines = "\n".join(line for line in metrics.splitlines() if line.startswith(STORE_FAMILIES))
    return {
        part.split('"', 1)[0] for part in lines.split(f',{label}="')[1:] + lines.split(f'{{{label}="')[1:]
    }


def cardinality_attack(server: Server, events: int, batch: int = 100) -> dict[str, float]:
    """Post events with distinct version, os and arch strings (gzip batches); return the figures."""
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    before_rss = rss_kib(server.proc.pid)
    before_lines = len(http("GET", server.url + "/metrics")[1].splitlines())
    accepted = 0
    for start in range(0, events, batch):
        items = []
        for n in range(start, start + batch):
            version = f"{n % 7}.{n // 7 % 1000}.{n}" if n % 4 else f"v{n}-not-semver-{'x' * (n % 50)}"
            items.append(
                {
                    "type": "heartbeat",
                    "user_id": f"{n:032x}",
                    "version": version,
                    "os": f"os-{n}",
                    "arch": f"arch{n}",
                }
            )
        status, reply, _ = http(
            "POST", server.url + "/v1/events", gzip.compress(json.dumps(items).encode()), headers
        )
        assert status == 200, reply[:300]
        accepted += json.loads(reply)["accepted"]
    metrics = http("GET", server.url + "/metrics")[1].decode()
    return {
        "events": accepted,
        "series_before": before_lines,
        "series_after": len(metrics.splitlines()),
        "versions": len(label_values(metrics, "version")),
        "os": len(label_values(metrics, "os")),
        "arch": len(label_values(metrics, "arch")),
        "rss_before_kib": before_rss,
        "rss_after_kib": rss_kib(server.proc.pid),
        "metrics": metrics,  # type: ignore[dict-item]
    }


EVENTS = 100_000  # ~16 s here, in gzip batches of 100


def test_a_cardinality_attack_stays_within_the_label_caps(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").wait_ready()
    try:
        figures = cardinality_attack(server, EVENTS)
    finally:
        assert server.stop() == 0
    metrics = str(figures.pop("metrics"))
    print(f"cardinality attack: {figures}")
    assert figures["events"] == EVENTS
    versions = label_values(metrics, "version") - {"unknown", "other"}
    assert len(versions) <= 100, "--max-versions (100) was not enforced"
    assert label_values(metrics, "os") <= GOOS | {"other", "unknown"}
    assert label_values(metrics, "arch") <= GOARCH | {"other", "unknown"}
    assert figures["series_after"] < 2_000
    assert figures["rss_after_kib"] - figures["rss_before_kib"] < 64 * 1024
    overflow = [
        line
        for line in metrics.splitlines()
        if line.startswith('flakedrop_label_overflow_total{label="version"}')
    ]
    assert overflow and float(overflow[0].rsplit(" ", 1)[1]) > 0


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted peer", "trusted proxy"])
def test_x_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path: Path, trusted: bool) -> None:
    extra = ["--trusted-proxies", "127.0.0.1"] if trusted else []
    server = Server(tmp_path / "data", "--rate-limit", "0.01", "--rate-burst", "1", *extra).wait_ready()
    body = json.dumps({"type": "heartbeat", "user_id": "c" * 32, "version": "v1.3.0"}).encode()
    try:
        statuses = [
            http(
                "POST",
                server.url + "/v1/events",
                body,
                {"Content-Type": "application/json", "X-Forwarded-For": ip},
            )[0]
            for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.2")
        ]
    finally:
        assert server.stop() == 0
    # a spoofed header from an untrusted peer changes nothing; through a proxy, each client has its own bucket
    assert statuses == ([200, 200, 429] if trusted else [200, 429, 429])
