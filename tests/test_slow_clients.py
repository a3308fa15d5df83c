"""Slow and many clients against the real server: slowloris sockets neither starve nor outlive the timeout."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from pathlib import Path

import pytest
from procs import Server, http

pytestmark = pytest.mark.slow

CHANNEL_TIMEOUT = 2
SLOW_CLIENTS = 100
TRICKLE_EVERY = 0.5  # seconds between two bytes of a slow client: well inside the idle timeout
GUARD = 10 * CHANNEL_TIMEOUT + 20  # the longest the test waits for anything (a hang guard, not a bound)
JSON = {"Content-Type": "application/json"}


def _event(n: int) -> bytes:
    """A flat heartbeat of user n."""
    return json.dumps(
        {"type": "heartbeat", "user_id": f"{n:032x}", "version": "v1.3.0", "os": "linux"}
    ).encode()


def _open_slow(port: int, index: int) -> socket.socket:
    """Open a slowloris socket: half the clients stall in the headers, half in a declared body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if index % 2:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    else:
        head = b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        sock.sendall(head + b"Content-Length: 100000\r\n\r\n{")
    sock.setblocking(False)
    return sock


def _closed(sock: socket.socket) -> bool:
    """Return whether the server closed (or reset) this socket."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except (ConnectionResetError, BlockingIOError):
        return True


def _trickle(sock: socket.socket, index: int) -> bool:
    """Send one more slow byte; return False once the server has closed the socket."""
    try:
        sock.send(b"X" if index % 2 else b" ")
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def test_slowloris_neither_blocks_normal_clients_nor_outlives_the_timeout(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "data", "--channel-timeout", str(CHANNEL_TIMEOUT), "--threads", "8"
    ).wait_ready()
    slow = [_open_slow(server.port, i) for i in range(SLOW_CLIENTS)]
    opened = time.monotonic()
    closed_at: dict[int, float] = {}
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def normal_client(worker: int) -> None:
        for i in range(5):
            started = time.monotonic()
            status = http("POST", server.url + "/v1/events", _event(worker * 100 + i), JSON, timeout=GUARD)[0]
            with lock:
                latencies.append(time.monotonic() - started)
                if status != 200:
                    failures.append(f"worker {worker}: {status}")

    try:
        # while every slow client is still connected and trickling, 16 normal clients (twice --threads) post
        for _ in range(2):
            for i, sock in enumerate(slow):
                _trickle(sock, i)
            time.sleep(TRICKLE_EVERY)
        alive = sum(not _closed(sock) for sock in slow)
        workers = [threading.Thread(target=normal_client, args=(w,)) for w in range(16)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=GUARD)
        # keep trickling (each slow client stays active, so an idle timeout alone never fires) until cut off
        while len(closed_at) < len(slow) and time.monotonic() - opened < GUARD:
            for i, sock in enumerate(slow):
                if i not in closed_at and (_closed(sock) or not _trickle(sock, i)):
                    closed_at[i] = time.monotonic() - opened
            time.sleep(TRICKLE_EVERY)
        healthy = http("GET", server.url + "/healthz", timeout=5)[0]
        stats = json.loads(http("GET", server.url + "/stats", timeout=5)[1])
    finally:
        for sock in slow:
            sock.close()
        assert server.stop() == 0
    print(
        f"{alive} of {SLOW_CLIENTS} slow clients connected while {len(latencies)} normal requests took "
        f"at most {max(latencies):.3f} s; all slow ones cut off after {max(closed_at.values(), default=0):.1f} s "
        f"(--channel-timeout {CHANNEL_TIMEOUT})"
    )
    assert alive == SLOW_CLIENTS, "the slow clients were cut off before the normal clients ran"
    assert not failures
    assert len(latencies) == 80
    assert max(latencies) < 1.0, "a normal client waited over 1 s behind the slow ones"
    assert stats["total_events"] == 80
    assert len(closed_at) == SLOW_CLIENTS, f"only {len(closed_at)} slow clients were cut off"
    assert healthy == 200


def test_stalled_clients_are_cut_off_by_the_idle_timeout(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--channel-timeout", str(CHANNEL_TIMEOUT)).wait_ready()
    try:
        stalled = [_open_slow(server.port, i) for i in range(20)]
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(20)]
        for sock in idle:
            sock.setblocking(False)
        everyone = stalled + idle
        started = time.monotonic()
        while not all(_closed(sock) for sock in everyone) and time.monotonic() - started < GUARD:
            time.sleep(0.2)
        assert all(_closed(sock) for sock in everyone)
        print(f"40 stalled or idle clients cut off after {time.monotonic() - started:.1f} s")
        for sock in everyone:
            sock.close()
        assert http("GET", server.url + "/healthz", timeout=5)[0] == 200
    finally:
        assert server.stop() == 0
