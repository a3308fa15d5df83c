"""Every extension of waitress's internals, in one place: JSON refusals, a per-request deadline, our limits.

Written for waitress 3.0.x (setup.cfg pins the range); `tests/test_waitress_server.py` checks, in the fast
suite, that every internal used here still exists and still behaves as these classes expect.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from exporter.config import Config

# waitress's own rejections, made before the app sees a request: status code -> (reason, how to fix)
HTTP_REJECTIONS = {
    400: ("bad_http", "the request is not valid HTTP/1.1; send a well-formed request line and headers"),
    413: (
        "body_too_large",
        "the body is larger than this server reads; send less (gzip it) or split the batch",
    ),
    431: ("headers_too_large", "the request headers exceed 64 KiB; send fewer or smaller headers"),
    501: (
        "bad_http",
        "the request uses a transfer encoding this server does not implement; use chunked or none",
    ),
}


def waitress_options(config: Config) -> dict[str, Any]:
    """Return waitress's limits, set on purpose rather than left at its defaults."""
    return {
        "threads": config.threads,
        "connection_limit": config.connection_limit,
        "channel_timeout": config.channel_timeout,
        "cleanup_interval": max(1, min(30, config.channel_timeout // 2)),
        # waitress buffers a body before the app sees it: cap it near our own limit (gzip bodies are smaller).
        "max_request_body_size": config.max_body_bytes + 64 * 1024,
        "max_request_header_size": 64 * 1024,
        "inbuf_overflow": 512 * 1024,
        "outbuf_overflow": 1024 * 1024,
        "backlog": 1024,
        # a 100-event batch is ~20 KB: read it in one recv, not three of waitress's default 8 KB
        "recv_bytes": 65536,
        # poll() is O(ready) where select() walks every fd up to the highest, and has no 1024-fd cap
        "asyncore_use_poll": True,
        "ident": "flakedrop-telemetry",
        "expose_tracebacks": False,
        # waitress's default (True, with no trusted_proxy) strips X-Forwarded-For from every request, so
        # --trusted-proxies never saw it; the app alone decides whom to believe (ratelimit.client_ip).
        "clear_untrusted_proxy_headers": False,
    }


class JSONErrorTask(ErrorTask):
    """Waitress's own 4xx replies, as the API's JSON error body, counted by reason like the app's."""

    def execute(self) -> None:
        """Write {title, description, reason} with waitress's status, or defer to waitress for a 5xx."""
        error: Any = getattr(self.request, "error", None)
        known = HTTP_REJECTIONS.get(getattr(error, "code", 0))
        server = self.channel.server
        if error is None or known is None or not isinstance(server, TelemetryServer):
            super().execute()
            return
        reason, hint = known
        server.count_rejection(reason)
        detail = f" ({error.body})" if error.body else ""
        body = json.dumps({"title": error.reason, "description": hint + detail, "reason": reason}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers = [*self.response_headers, ("Content-Type", "application/json")]
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class DeadlineChannel(HTTPChannel):
    """A channel that remembers when the request it is reading began to arrive."""

    request_started = 0.0
    error_task_class = JSONErrorTask

    def received(self, data: bytes) -> bool:
        """Note when a new request's first bytes arrive, then parse as waitress does."""
        if self.request is None and data:
            self.request_started = time.time()
        return bool(super().received(data))

    def still_reading(self, before: float) -> bool:
        """Return whether this channel's current request began arriving before `before` and is not complete."""
        return self.request is not None and not self.requests and self.request_started < before


class TelemetryServer(TcpWSGIServer):
    """waitress's TCP server on one bound socket, which also cuts requests that arrive too slowly.

    waitress's channel_timeout is an idle timeout only: a client that trickles a byte more often than
    that holds its connection forever. This server also closes a connection whose current request is
    still arriving `deadline` seconds after its first byte.
    """

    channel_class = DeadlineChannel

    def __init__(
        self,
        app: Callable[..., Any],
        sock: socket.socket,
        options: dict[str, Any],
        *,
        deadline: float,
        count_rejection: Callable[[str], None],
    ) -> None:
        self.deadline = deadline
        self.count_rejection = count_rejection
        adj = Adjustments(**options, sockets=[sock])
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(adj.threads)
        super().__init__(
            app,
            {},
            True,
            sock,
            dispatcher=dispatcher,
            adj=adj,
            bind_socket=False,
            sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()),
        )

    def maintenance(self, now: float) -> None:
        """Close idle channels (as waitress does) and channels still sending one request past the deadline."""
        super().maintenance(now)  # type: ignore[arg-type]  # the stubs say int; waitress passes time.time()
        channels: dict[int, HTTPChannel] = self.active_channels  # type: ignore[assignment]  # stubs are wrong
        for channel in list(channels.values()):
            if isinstance(channel, DeadlineChannel) and channel.still_reading(now - self.deadline):
                channel.will_close = True
