"""`make bench`: our server against the Falcon+waitress floor in the same run, plus batches, memory and 1M users.

Every figure is reported next to a baseline measured in the same run (ratios survive noisy machines).
Results go to bench/RESULTS.md. Loopback only; every process started here is stopped here, by PID.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable


def free_port() -> int:
    """Return a free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Proc:
    """A server process started by the bench."""

    popen: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        """Resident set size in MB of the server and its children (the writer process), from /proc."""
        pids, total = [self.popen.pid], 0
        while pids:
            pid = pids.pop()
            try:
                text = Path(f"/proc/{pid}/status").read_text()
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            total += int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1))
        return total / 1024

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) so far of the server process and of each of its children, by name."""
        ticks = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        pids = [self.popen.pid]
        while pids:
            pid = pids.pop()
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            name = "server" if pid == self.popen.pid else "writer" if b"spawn_main" in cmdline else "other"
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
        return out

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; by PID."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)


def wait_http(url: str, path: str = "/healthz", timeout: float = 60.0) -> float:
    """Poll until url+path answers 200; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            conn = http.client.HTTPConnection(url.split("//")[1], timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url}{path} not ready in {timeout}s")


def export_baseline(ref: str, into: Path) -> Path:
    """Write the tree of git revision `ref` into a directory, to run it as the same-run baseline."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def start(
    kind: str, data_dir: Path | None, pin: bool, extra: tuple[str, ...] = (), tree: Path | None = None
) -> Proc:
    """Start the floor, our server, or the baseline revision of our server, optionally pinned to core 0."""
    port = free_port()
    prefix = ["taskset", "-c", "0"] if pin else []
    cwd, env = ROOT, None
    if kind == "base":
        assert tree is not None, "the baseline server needs the baseline's tree"
        cwd = tree
        env = {**os.environ, "PYTHONPATH": str(cwd)}  # its own `exporter` package, the same dependencies
    if kind == "floor":
        cmd = [*prefix, PY, str(BENCH / "floor_app.py"), str(port)]
    else:
        cmd = [
            *prefix,
            PY,
            "-m",
            "exporter",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
            *extra,
        ]
    popen = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = Proc(popen, port)
    if kind != "floor":
        wait_http(proc.url, timeout=30)
    else:
        _wait_port(port)
    return proc


def _wait_port(port: int) -> None:
    """Wait until a TCP port accepts connections."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def wrk(url: str, script: str, conns: int, seconds: int, pin: bool) -> dict:
    """Run wrk and parse requests/s, p50/p99 latency (ms) and non-2xx responses."""
    prefix = ["taskset", "-c", "1"] if pin else []
    cmd = [*prefix, "wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(BENCH / script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(label: str) -> float:
        match = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50": pct("50"),
        "p99": pct("99"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": errors.group(1) if errors else "",
    }


def median(runs: list[dict], key: str) -> float:
    """Median of one figure over rounds."""
    return statistics.median(run[key] for run in runs)


def throughput(rounds: int, seconds: int, tmp: Path, baseline: Path | None = None) -> dict:
    """Interleave the floor, ours (and the baseline), c16 and c64, unpinned and pinned; return medians."""
    results: dict[tuple[str, int, bool], list[dict]] = {}
    for pin in (False, True):
        names = ("floor", "ours", "base") if baseline else ("floor", "ours")
        procs = {
            name: start(name, None if name == "floor" else tmp / f"tp-{name}-{pin}", pin, tree=baseline)
            for name in names
        }
        try:
            for proc in procs.values():
                wrk(proc.url, "client.lua", 16, 2, pin)  # warm up
            for _ in range(rounds):
                for conns in (16, 64):
                    for name, proc in procs.items():
                        results.setdefault((name, conns, pin), []).append(
                            wrk(proc.url, "client.lua", conns, seconds, pin)
                        )
        finally:
            for proc in procs.values():
                proc.stop()
    return {
        key: {k: median(runs, k) for k in ("rps", "p50", "p99", "non2xx")} for key, runs in results.items()
    }


def batches(seconds: int, tmp: Path, kind: str = "ours", tree: Path | None = None) -> dict:
    """Events/s with 100-event batches (c16), against single-event ingest in the same run."""
    ours = start(kind, tmp / f"batch-{kind}", False, tree=tree)
    try:
        wrk(ours.url, "batch.lua", 16, 2, False)
        before, started = ours.cpu_seconds(), time.monotonic()
        batch = wrk(ours.url, "batch.lua", 16, seconds, False)
        after, elapsed = ours.cpu_seconds(), time.monotonic() - started
        single = wrk(ours.url, "client.lua", 16, seconds, False)
    finally:
        ours.stop()
    events = batch["rps"] * 100 * elapsed
    cpu_us = {name: (after[name] - before.get(name, 0.0)) / events * 1e6 for name in after}
    return {
        "batch_events": batch["rps"] * 100,
        "batch_p99": batch["p99"],
        "single_events": single["rps"],
        "cpu_us": cpu_us,
    }


def post_batches(url: str, total: int, offset: int, users: int, threads: int = 8) -> None:
    """Post `total` events in batches of 100 from `users` distinct users, with a few threads."""
    host = url.split("//")[1]

    def work(part: int) -> None:
        conn = http.client.HTTPConnection(host, timeout=30)
        for start_at in range(offset + part * 100, offset + total, threads * 100):
            body = (
                "["
                + ",".join(
                    json.dumps(
                        {
                            "type": "deployment",
                            "user_id": f"{(n % users):032x}",
                            "version": "v1.3.0",
                            "os": "linux",
                            "success": n % 10 != 0,
                            "timestamp": f"2026-11-27T10:00:00.{n:09d}Z",
                        }
                    )
                    for n in range(start_at, start_at + 100)
                )
                + "]"
            )
            conn.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/json"})
            conn.getresponse().read()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def memory(tmp: Path, events: int) -> dict:
    """RSS at start, after 100k and after `events` events from 100k users."""
    ours = start("ours", tmp / "mem", False)
    try:
        figures = {"start": ours.rss_mb()}
        post_batches(ours.url, 100_000, 0, 100_000)
        figures["100k"] = ours.rss_mb()
        post_batches(ours.url, events - 100_000, 100_000, 100_000)
        figures["end"] = ours.rss_mb()
        figures["events"] = events
    finally:
        ours.stop()
    return figures


def latency(url: str, path: str, count: int) -> tuple[float, float]:
    """Sequential GETs; return p50 and p99 in ms."""
    conn = http.client.HTTPConnection(url.split("//")[1], timeout=60)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, (path, resp.status)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]


def million_users(tmp: Path, users: int) -> dict:
    """Seed `users` users through the store directly, then time reads and restart-to-ready."""
    data = tmp / "million"
    started = time.monotonic()
    subprocess.run(
        [
            PY,
            "-m",
            "exporter",
            "simulate",
            "--direct",
            "--data-dir",
            str(data),
            "--users",
            str(users),
            "--days",
            "30",
            "--no-progress",
        ],
        cwd=ROOT,
        check=True,
        timeout=3600,
    )
    seeded = time.monotonic() - started
    figures: dict = {"users": users, "seed_seconds": seeded}
    readies = []
    for _ in range(3):
        port = free_port()
        t0 = time.monotonic()
        popen = subprocess.Popen(
            [
                PY,
                "-m",
                "exporter",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc = Proc(popen, port)
        wait_http(proc.url, "/readyz")
        readies.append(time.monotonic() - t0)
        if len(readies) == 3:
            for path in ("/stats", "/metrics", "/"):
                figures[path] = latency(proc.url, path, 200)
            figures["rss_mb"] = proc.rss_mb()
        proc.stop()
    figures["ready_s"] = statistics.median(readies)
    figures["store_mb"] = sum(p.stat().st_size for p in data.glob("telemetry.db*")) / 1e6
    return figures


def baseline_lines(ref: str, tp: dict | None, batch: dict | None, base_batch: dict | None) -> list[str]:
    """The before/after section: ours/floor against baseline/floor, each pair from the same run."""
    lines = ["", f"## Against the baseline `{ref}` (same run)", ""]
    if tp is not None:
        lines += ["| mode | conns | base/floor | ours/floor | ours/base |", "|---|---|---|---|---|"]
        for pin in (False, True):
            for conns in (16, 64):
                floor = tp[("floor", conns, pin)]["rps"]
                base, ours = tp[("base", conns, pin)]["rps"], tp[("ours", conns, pin)]["rps"]
                lines.append(
                    f"| {'pinned' if pin else 'unpinned'} | {conns} | {base / floor:.2f}x | {ours / floor:.2f}x | "
                    f"**{ours / base:.2f}x** |"
                )
    if batch is not None and base_batch is not None:
        lines += [
            "",
            f"- Batches: ours {batch['batch_events']:.0f} events/s, baseline {base_batch['batch_events']:.0f} "
            f"events/s: **{batch['batch_events'] / base_batch['batch_events']:.2f}x**.",
        ]
    return lines


def report(
    args: argparse.Namespace,
    tp: dict | None,
    batch: dict | None,
    mem: dict | None,
    big: dict | None,
    base_batch: dict | None = None,
) -> str:
    """Render bench/RESULTS.md."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    lines = [
        "# Benchmark results",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"{subprocess.run(['wrk', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}",
        f"- Command: `make bench` (`python bench/run.py --rounds {args.rounds} --seconds {args.seconds} "
        f"--events {args.events} --users {args.users}`)",
        "- Load: wrk on loopback, `bench/client.lua` sends the client's exact `deployment` bytes, rotating",
        "  users, OS and versions; `bench/batch.lua` sends 100-event batches. Medians of interleaved rounds.",
        "- Floor: `bench/floor_app.py`, a bare Falcon+waitress endpoint that only parses JSON (waitress",
        "  defaults: 4 threads, no CPU pinning).",
        "- Ours: `flakedrop-telemetry serve` with its defaults and the real SQLite store (durability on:",
        "  WAL, synchronous=FULL, 2xx only after commit); 32 threads; the server pins itself to one CPU",
        "  and its writer process to the other (`--pin-cpus`). Pinned = the whole server on core 0",
        "  (taskset; it then commits in a thread), wrk on core 1.",
        "",
    ]
    if tp is not None:
        lines += [
            "## Single-event ingest",
            "",
            "| mode | conns | floor req/s | ours req/s | ours/floor | floor p99 ms | ours p99 ms | ours non-2xx |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for pin in (False, True):
            for conns in (16, 64):
                f, o = tp[("floor", conns, pin)], tp[("ours", conns, pin)]
                lines.append(
                    f"| {'pinned' if pin else 'unpinned'} | {conns} | {f['rps']:.0f} | {o['rps']:.0f} | "
                    f"**{o['rps'] / f['rps']:.2f}x** | {f['p99']:.1f} | {o['p99']:.1f} | {o['non2xx']:.0f} |"
                )
        lines += ["", "Overload (p99 at c64 / p99 at c16, lower is better; target <= 5):", ""]
        for pin in (False, True):
            for name in ("floor", "ours"):
                ratio = tp[(name, 64, pin)]["p99"] / tp[(name, 16, pin)]["p99"]
                lines.append(f"- {name}, {'pinned' if pin else 'unpinned'}: {ratio:.2f}x")
    if batch is not None:
        lines += [
            "",
            "## Batched ingest (100 events per request, c16)",
            "",
            f"- {batch['batch_events']:.0f} events/s (p99 {batch['batch_p99']:.1f} ms), "
            f"{batch['batch_events'] / batch['single_events']:.1f}x single-event ingest in the same run "
            f"({batch['single_events']:.0f} events/s).",
            "- CPU per event (user + system, over the whole run): "
            + ", ".join(f"{name} {value:.1f} us" for name, value in sorted(batch["cpu_us"].items()) if value)
            + f"; total {sum(batch['cpu_us'].values()):.1f} us. On {os.cpu_count()} cores, 40k events/s "
            f"needs at most {os.cpu_count() * 1e6 / 40000:.0f} us in all.",
            "",
        ]
    if mem is not None:
        lines += [
            "## Memory (RSS)",
            "",
            f"- server and writer process together: at start: {mem['start']:.1f} MB; after 100k events: {mem['100k']:.1f} MB; after {mem['events']:,} "
            f"events from 100k users: {mem['end']:.1f} MB ({(mem['end'] / mem['100k'] - 1) * 100:+.1f}% from 100k).",
            "",
        ]
    if big is not None:
        lines += [
            f"## {big['users']:,} users in the store",
            "",
            f"- Seeded through the store directly (`simulate --direct`) in {big['seed_seconds']:.0f} s; "
            f"store files {big['store_mb']:.0f} MB; server RSS {big['rss_mb']:.1f} MB.",
            f"- Restart to ready (`/readyz` 200, median of 3): {big['ready_s']:.2f} s.",
            "",
            "| endpoint | p50 ms | p99 ms |",
            "|---|---|---|",
        ]
        for path in ("/stats", "/metrics", "/"):
            p50, p99 = big[path]
            lines.append(f"| `{path}` | {p50:.1f} | {p99:.1f} |")
    if args.baseline:
        lines += baseline_lines(args.baseline, tp, batch, base_batch)
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run every benchmark and write bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--events", type=int, default=1_000_000, help="events for the memory run")
    parser.add_argument("--users", type=int, default=1_000_000, help="users for the big-store run")
    parser.add_argument("--out", default=str(BENCH / "RESULTS.md"))
    parser.add_argument(
        "--baseline",
        default="",
        help="git revision to run as a third server, for before/after ratios in one run",
    )
    parser.add_argument(
        "--parts", default="throughput,batches,memory,big", help="comma-separated parts to run"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            print(f"bench needs {tool} (Debian package); `make system-deps` installs wrk", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="flakedrop-bench-") as name:
        tmp = Path(name)
        baseline = export_baseline(args.baseline, tmp / "baseline") if args.baseline else None
        tp = batch = mem = big = base_batch = None
        if "throughput" in parts:
            print("throughput...", file=sys.stderr)
            tp = throughput(args.rounds, args.seconds, tmp, baseline)
        if "batches" in parts:
            print("batches...", file=sys.stderr)
            batch = batches(args.seconds, tmp)
            base_batch = batches(args.seconds, tmp, "base", baseline) if baseline else None
        if "memory" in parts:
            print("memory...", file=sys.stderr)
            mem = memory(tmp, args.events)
        if "big" in parts:
            print("1M users...", file=sys.stderr)
            big = million_users(tmp, args.users)
    text = report(args, tp, batch, mem, big, base_batch)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
