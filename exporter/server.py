"""Serving: waitress with deliberate limits, one or several processes, and a clean shutdown."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

from prometheus_client import CollectorRegistry

from exporter.app import build_service
from exporter.config import Config
from exporter.snapshots import Snapshots, start_snapshots
from exporter.store import Store, open_store
from exporter.waitress_server import TelemetryServer, waitress_options

log = logging.getLogger(__name__)


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
    return serve_one(config)


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


def serve_one(config: Config, worker: int = 0) -> int:
    """Serve one process; the store opens before the port is bound, so store errors come first."""
    writer_process, placement = place_on_cpus(config, worker)
    store = open_store(
        config.store_url,
        writer_process=writer_process,
        max_versions=config.max_versions,
        dedup_window=config.dedup_window,
        **placement,
    )
    maintenance: Maintenance | None = None
    server: TelemetryServer | None = None
    snapshots: Snapshots | None = None
    registry = CollectorRegistry()  # the app's, shared with the snapshot scheduler's metrics
    try:
        service = build_service(config, store=store, registry=registry)
        # waitress warns on every queued task under load; the latency histogram already tells that story.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        server = TelemetryServer(
            service.app,
            bind_socket(config),
            waitress_options(config),
            deadline=config.channel_timeout,
            count_rejection=service.metrics.count_rejection,
        )
        if config.retention_days:
            maintenance = Maintenance(store, config.retention_days)
            maintenance.start()
        snapshots = start_snapshots(config, registry) if worker == 0 else None  # one scheduler per store

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
        if server is not None:
            server.close()
        store.close()  # also when build_service or binding the port failed: no store is leaked
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
                code = serve_one(config, worker)
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
