"""Serving: waitress with deliberate limits, one or several processes, and a clean shutdown."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

from prometheus_client import CollectorRegistry
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask

from exporter.app import create_app
from exporter.config import Config
from exporter.snapshots import start_snapshots
from exporter.store import Store, open_store

log = logging.getLogger(__name__)


def waitress_options(config: Config) -> dict:
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


class JSONErrorTask(ErrorTask):
    """Waitress's own 4xx replies, as the API's JSON error body, counted by reason like the app's."""

    def execute(self) -> None:
        """Write {title, description, reason} with waitress's status, or defer to it for a 5xx."""
        error = self.request.error
        known = HTTP_REJECTIONS.get(error.code)
        if known is None:
            super().execute()
            return
        reason, hint = known
        count: Callable[[str], None] | None = getattr(self.channel.server, "count_rejection", None)
        if count is not None:
            count(reason)
        detail = f" ({error.body})" if error.body else ""
        body = json.dumps({"title": error.reason, "description": hint + detail, "reason": reason}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class DeadlineChannel(HTTPChannel):
    """A waitress channel that remembers when the request it is reading began to arrive."""

    request_started = 0.0
    error_task_class = JSONErrorTask

    def received(self, data: bytes) -> bool:
        """Note when a new request's first bytes arrive, then parse as waitress does."""
        if self.request is None and data:
            self.request_started = time.time()
        return super().received(data)


def cut_slow_requests(server: BaseWSGIServer, deadline: float) -> None:
    """Also close connections still sending one request after deadline s (waitress cuts only idle ones)."""
    cut_idle = server.maintenance

    def maintenance(now: float) -> None:
        cut_idle(now)
        for channel in list(server.active_channels.values()):
            reading = channel.request is not None and not channel.requests
            if reading and getattr(channel, "request_started", now) < now - deadline:
                channel.will_close = True

    server.channel_class = DeadlineChannel
    server.maintenance = maintenance  # type: ignore[method-assign]


class Maintenance(threading.Thread):
    """Background upkeep inside the server: prunes users past the retention period, hourly."""

    def __init__(
        self,
        store: Store,
        retention_days: int,
        interval: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="maintenance", daemon=True)
        self.store = store
        self.retention_days = retention_days
        self.interval = interval
        self.clock = clock
        self.stopped = threading.Event()

    def run_once(self) -> int:
        """Prune users inactive for longer than the retention period; return how many went."""
        try:
            removed = self.store.prune(self.clock() - self.retention_days * 86400)
        except Exception as exc:
            log.warning("retention pruning failed, will retry: %s", exc)
            return 0
        if removed:
            log.info("retention: removed %d users inactive for over %d days", removed, self.retention_days)
        return removed

    def run(self) -> None:
        """Prune now, then once per interval, until stopped."""
        while not self.stopped.is_set():
            self.run_once()
            self.stopped.wait(self.interval)


def serve(config: Config) -> int:
    """Run the server until SIGTERM or SIGINT; return the exit code."""
    if config.workers > 1:
        return serve_workers(config)
    return _serve_on(config, None)


def bind_socket(config: Config) -> socket.socket:
    """Bind the listening socket (with SO_REUSEPORT, so several processes can share the port)."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if config.workers > 1:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((config.host, config.port))
    sock.listen(1024)
    return sock


def cpu_plan(allowed: set[int], worker: int) -> tuple[int, int]:
    """Return (server CPU, writer CPU) for worker number `worker`: distinct CPUs when two are allowed."""
    cpus = sorted(allowed)
    server = cpus[worker % len(cpus)]
    return server, cpus[(worker + 1) % len(cpus)]


def place_on_cpus(config: Config, worker: int) -> tuple[bool, dict[str, int]]:
    """Pin this process per --pin-cpus; return whether to commit in a writer process, and its CPU."""
    if not config.pin_cpus or not hasattr(os, "sched_setaffinity"):
        return config.writer_process, {}
    allowed = os.sched_getaffinity(0)
    server_cpu, writer_cpu = cpu_plan(allowed, worker)
    try:
        os.sched_setaffinity(0, {server_cpu})
    except OSError as exc:  # a sandbox may forbid it: serve unpinned rather than not at all
        log.warning("cannot pin to CPU %d (%s); serving unpinned", server_cpu, exc)
        return config.writer_process, {}
    # One CPU: a writer process would only add pipe and context-switch cost to the same core.
    writer_process = config.writer_process and len(allowed) > 1
    placement = {"cpu": writer_cpu} if writer_process else {}
    log.info("pinned to CPU %d%s", server_cpu, f", writer to CPU {writer_cpu}" if placement else "")
    return writer_process, placement


def _serve_on(config: Config, sock: socket.socket | None, worker: int = 0) -> int:
    """Serve one process; the store opens before the port is bound, so store errors come first."""
    writer_process, placement = place_on_cpus(config, worker)
    store = open_store(
        config.store_url,
        writer_process=writer_process,
        max_versions=config.max_versions,
        dedup_window=config.dedup_window,
        **placement,
    )
    registry = CollectorRegistry()
    app = create_app(config, store=store, registry=registry)
    # waitress warns on every queued task under load; the latency histogram already tells that story.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    maintenance = Maintenance(store, config.retention_days) if config.retention_days else None
    if maintenance:
        maintenance.start()
    try:
        sock = sock or bind_socket(config)
    except OSError:
        store.close()
        raise
    snapshots = start_snapshots(config, registry) if worker == 0 else None  # one scheduler per store
    server = create_server(app, sockets=[sock], **waitress_options(config))
    cut_slow_requests(server, config.channel_timeout)
    server.count_rejection = app.count_rejection  # type: ignore[attr-defined]  # for JSONErrorTask

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log.info(
        "serving on http://%s:%d (store %s, pid %d)",
        config.host,
        config.port,
        config.store_url.split("@")[-1],
        os.getpid(),
    )
    try:
        server.run()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        if maintenance:
            maintenance.stopped.set()
        if snapshots:
            snapshots.stop()
        server.close()
        store.close()
        log.info("stopped")
    return 0


def serve_workers(config: Config) -> int:
    """Fork several single-process servers sharing the port with SO_REUSEPORT; restart none."""
    children: list[int] = []
    for worker in range(config.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _serve_on(config, None, worker)
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        while True:
            try:
                _, code = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        status = status or os.waitstatus_to_exitcode(code)
    return status
