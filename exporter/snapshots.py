"""Scheduled snapshots inside the server: a backup every interval into --backup-dir, the oldest beyond keep deleted."""

from __future__ import annotations

import calendar
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter.backup import BackupError, key_material, take_backup
from exporter.config import Config
from exporter.store import sqlite_file

log = logging.getLogger(__name__)
# telemetry-20261201T084103.123Z.db: UTC to the millisecond, so names sort in time order.
NAME = re.compile(r"^telemetry-(\d{8}T\d{6})\.(\d{3})Z\.(db|pgdump)$")


def snapshot_name(now: float, suffix: str) -> str:
    """Return the file name of a snapshot taken at now (Unix seconds)."""
    millis = round(now * 1000)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(millis // 1000))
    return f"telemetry-{stamp}.{millis % 1000:03d}Z.{suffix}"


def snapshot_time(name: str) -> float | None:
    """Return when a snapshot named by snapshot_name was taken, or None for another file."""
    match = NAME.match(name)
    if not match:
        return None
    return calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%S")) + int(match.group(2)) / 1000


class Snapshots(threading.Thread):
    """Takes a snapshot each interval (the first once the newest is due) until stopped; run_once() is one round."""

    def __init__(
        self,
        config: Config,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="snapshots", daemon=True)
        self.config = config
        self.directory = Path(config.backup_dir)
        self.suffix = "db" if sqlite_file(config.store_url) else "pgdump"
        self.clock = clock
        self.stopped = threading.Event()
        self.last_success = Gauge(
            "flakedrop_backup_last_success_timestamp_seconds",
            "When the newest scheduled snapshot was taken (Unix seconds; 0 when there is none).",
            registry=registry,
        )
        self.failures = Counter(
            "flakedrop_backup_failures_total",
            "Scheduled snapshots that failed (each leaves no file under its final name).",
            registry=registry,
        )
        interval = Gauge(
            "flakedrop_backup_interval_seconds",
            "Seconds between scheduled snapshots (the stale-backup alert compares against it).",
            registry=registry,
        )
        interval.set(config.backup_interval)
        self.last_success.set(max((t for _, t in self.existing()), default=0.0))

    def existing(self) -> list[tuple[Path, float]]:
        """Return this server's snapshots in the directory, oldest first, with when each was taken."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.iterdir():
                taken = snapshot_time(path.name)
                if taken is not None and path.name.endswith("." + self.suffix):
                    found.append((path, taken))
        return sorted(found, key=lambda item: item[1])

    def run_once(self) -> Path | None:
        """Take one snapshot and rotate; return its path, or None (counted) when it failed."""
        now = self.clock()
        dest = self.directory / snapshot_name(now, self.suffix)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            key = None
            if self.suffix == "db":
                key = key_material(self.config.data_dir, self.config.user_id_key)
            take_backup(self.config.store_url, dest, key, clock=lambda: now)
        except (BackupError, OSError) as exc:
            self.failures.inc()
            log.error("scheduled snapshot failed, will retry in %ds: %s", self.config.backup_interval, exc)
            return None
        self.last_success.set(now)
        self.rotate()
        log.info("snapshot written to %s", dest)
        return dest

    def rotate(self) -> None:
        """Delete the oldest snapshots beyond the keep count."""
        snapshots = self.existing()
        for path, _ in snapshots[: max(len(snapshots) - self.config.backup_keep, 0)]:
            try:
                path.unlink()
            except OSError as exc:
                log.warning("cannot delete old snapshot %s: %s", path, exc)

    def sweep(self) -> None:
        """Delete temporary files a killed server left behind (they never carry a final name)."""
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.glob("telemetry-*Z.*.tmp-*"):
                with contextlib.suppress(OSError):
                    path.unlink()

    def first_delay(self) -> float:
        """Return how long to wait before the first snapshot: until the newest one is an interval old.

        A restart then takes no snapshot of its own while start-up is busy, and frequent restarts do not
        rotate older snapshots out of the keep count.
        """
        newest = max((taken for _, taken in self.existing()), default=None)
        return 0.0 if newest is None else max(0.0, newest + self.config.backup_interval - self.clock())

    def run(self) -> None:
        """Sweep, wait until a snapshot is due, then take one per interval until stopped."""
        self.sweep()
        self.stopped.wait(self.first_delay())
        while not self.stopped.is_set():
            self.run_once()
            self.stopped.wait(self.config.backup_interval)

    def stop(self) -> None:
        """Stop after the snapshot in progress, if any."""
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=60)


def start_snapshots(config: Config, registry: CollectorRegistry) -> Snapshots | None:
    """Start the scheduler when --backup-dir is set; return it (to stop), else None."""
    if not config.backup_dir:
        return None
    snapshots = Snapshots(config, registry)
    snapshots.start()
    return snapshots
