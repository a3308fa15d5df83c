"""Single-event ingest rate with and without backups running, in the same run; prints the ratio (target >= 0.5).

Two kinds of backup load: a loop of `flakedrop-telemetry backup` processes against the live store, and the
server's own scheduled snapshots every second. Rounds alternate without/with, so drift hits both alike.
Loopback only; every process started here is stopped here, by PID.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PY, ROOT, post_batches, start, wrk


class BackupLoop(threading.Thread):
    """Runs `backup` processes one after another against a data dir until stopped; counts them."""

    def __init__(self, data_dir: Path, target: Path) -> None:
        super().__init__(daemon=True)
        self.data_dir, self.target = data_dir, target
        self.stopped = threading.Event()
        self.done = 0

    def run(self) -> None:
        """Back up in a loop."""
        while not self.stopped.is_set():
            cmd = [PY, "-m", "exporter", "backup", "--data-dir", str(self.data_dir), "--to", str(self.target)]
            result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                raise RuntimeError(f"backup failed: {result.stderr.strip()}")
            self.done += 1

    def stop(self) -> int:
        """Stop after the backup in progress; return how many completed."""
        self.stopped.set()
        self.join(timeout=600)
        return self.done


def cli_mode(tmp: Path, rounds: int, seconds: int, conns: int, prefill: int) -> dict:
    """One server; alternate wrk rounds without and with a loop of backup processes."""
    data = tmp / "data-cli"
    server = start("ours", data, pin=False)
    without, with_backup, backups = [], [], 0
    try:
        post_batches(server.url, prefill, 0, prefill)
        for _ in range(rounds):
            without.append(wrk(server.url, "client.lua", conns, seconds, pin=False)["rps"])
            loop = BackupLoop(data, tmp / "bench-backup.db")
            loop.start()
            with_backup.append(wrk(server.url, "client.lua", conns, seconds, pin=False)["rps"])
            backups += loop.stop()
    finally:
        server.stop()
    return result("cli", without, with_backup, backups)


def snapshots_mode(tmp: Path, rounds: int, seconds: int, conns: int, prefill: int) -> dict:
    """Two servers, one taking snapshots every second; alternate wrk rounds between them."""
    snaps = tmp / "snaps"
    extra = ("--backup-dir", str(snaps), "--backup-interval", "1", "--backup-keep", "2")
    plain = start("ours", tmp / "data-plain", pin=False)
    snapping = start("ours", tmp / "data-snap", pin=False, extra=extra)
    without, with_backup = [], []
    try:
        for proc in (plain, snapping):
            post_batches(proc.url, prefill, 0, prefill)
        for _ in range(rounds):
            without.append(wrk(plain.url, "client.lua", conns, seconds, pin=False)["rps"])
            with_backup.append(wrk(snapping.url, "client.lua", conns, seconds, pin=False)["rps"])
    finally:
        plain.stop()
        snapping.stop()
    return result("snapshots", without, with_backup, len(list(snaps.glob("telemetry-*Z.db"))))


def result(mode: str, without: list[float], with_backup: list[float], backups: int) -> dict:
    """Return one mode's figures and the ratio of the medians."""
    ratio = statistics.median(with_backup) / statistics.median(without)
    return {"mode": mode, "without_rps": without, "with_rps": with_backup, "backups": backups, "ratio": ratio}


def main() -> int:
    """Run the benchmark and print one JSON line per mode."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--prefill", type=int, default=20000, help="users posted before measuring")
    parser.add_argument("--mode", choices=("cli", "snapshots", "both"), default="both")
    args = parser.parse_args()
    modes = ("cli", "snapshots") if args.mode == "both" else (args.mode,)
    with tempfile.TemporaryDirectory(prefix="flakedrop-backup-bench-") as name:
        for mode in modes:
            run = cli_mode if mode == "cli" else snapshots_mode
            figures = run(Path(name), args.rounds, args.seconds, args.conns, args.prefill)
            print(json.dumps(figures))
            verdict = "ok" if figures["ratio"] >= 0.5 else "BELOW TARGET"
            print(
                f"{mode}: ingest with backups = {figures['ratio']:.2f}x without ({verdict}, target >= 0.5x)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
