"""The waitress extensions, in the fast suite: every internal they use exists, and they behave on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from importlib.metadata import version

import pytest
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, TcpWSGIServer
from waitress.task import ErrorTask

from exporter.config import Config
from exporter.waitress_server import HTTP_REJECTIONS, DeadlineChannel, TelemetryServer, waitress_options


def test_waitress_is_the_release_the_extensions_were_written_for() -> None:
    """setup.cfg pins waitress to 3.0.x; a newer waitress must be reviewed against this module first."""
    major, minor = (int(part) for part in version("waitress").split(".")[:2])
    assert (major, minor) == (3, 0)


def test_every_internal_used_exists() -> None:
    """Each waitress attribute the extensions override or read is still there, with the expected shape."""
    assert callable(HTTPChannel.received)
    assert HTTPChannel.request is None and HTTPChannel.will_close is False
    assert HTTPChannel.error_task_class is ErrorTask
    assert callable(ErrorTask.execute) and callable(ErrorTask.set_close_on_finish)
    assert callable(BaseWSGIServer.maintenance) and BaseWSGIServer.channel_class is HTTPChannel
    assert issubclass(TcpWSGIServer, BaseWSGIServer)
    adj = Adjustments(**waitress_options(Config()))  # every option we set is one waitress knows
    assert adj.recv_bytes == 65536 and adj.clear_untrusted_proxy_headers is False
    assert set(HTTP_REJECTIONS) == {400, 413, 431, 501}


def hello(environ: dict, start_response: object) -> list[bytes]:
    """A WSGI app that answers 200."""
    start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
    return [b"ok"]


@pytest.fixture
def served() -> Iterator[tuple[TelemetryServer, list[str]]]:
    """A TelemetryServer on a loopback port, run in a thread; yields it and the reasons it counted."""
    counted: list[str] = []
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    options = waitress_options(Config(channel_timeout=1000, threads=2))
    server = TelemetryServer(hello, sock, options, deadline=5.0, count_rejection=counted.append)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server, counted
    server.close()
    thread.join(timeout=10)


def exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes and read the reply until the server closes (bounded by a timeout)."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        try:
            conn.sendall(raw)
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading all of it
    return b"".join(chunks)


def port_of(server: TelemetryServer) -> int:
    """Return the server's bound port."""
    return int(server.socket.getsockname()[1])


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        pytest.param(b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400, "bad_http", id="bad-length"),
        pytest.param(
            b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (128 * 1024) + b"\r\n\r\n",
            431,
            "headers_too_large",
            id="headers",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413, "body_too_large", id="body"
        ),
    ],
)
def test_refusals_are_json_and_counted(
    served: tuple[TelemetryServer, list[str]], raw: bytes, status: int, reason: str
) -> None:
    """waitress's own refusals answer the API's JSON error body and are counted by reason."""
    server, counted = served
    head, _, body = exchange(port_of(server), raw).partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(status).encode()
    assert b"Content-Type: application/json" in head
    document = json.loads(body)
    assert document["reason"] == reason and document["description"] and document["title"]
    assert counted == [reason]


def wait_for(predicate: object, seconds: float = 10.0) -> bool:
    """Poll a predicate for up to `seconds` (bounded), returning its last value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_a_request_still_arriving_past_the_deadline_is_cut_but_an_idle_one_is_not(
    served: tuple[TelemetryServer, list[str]],
) -> None:
    """maintenance() closes a half-sent request past the deadline and leaves an idle connection alone."""
    server, _ = served
    port = port_of(server)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as slow,
        socket.create_connection(("127.0.0.1", port), timeout=10) as idle,
    ):
        slow.sendall(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\npartial")

        def channels() -> list[DeadlineChannel]:
            return [c for c in list(server.active_channels.values()) if isinstance(c, DeadlineChannel)]  # type: ignore[attr-defined]

        assert wait_for(lambda: len(channels()) == 2 and any(c.request is not None for c in channels()))
        server.maintenance(time.time() + 6)  # past the 5 s deadline, far inside the 1000 s idle timeout
        reading = [c for c in channels() if c.request is not None]
        waiting = [c for c in channels() if c.request is None]
        assert [c.will_close for c in reading] == [True]
        assert [c.will_close for c in waiting] == [False]
        assert slow.recv(1024) == b""  # the server closed it
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(1024).startswith(b"HTTP/1.1 200")
