"""`make profile`: py-spy on our server under wrk load; prints where the CPU goes, writes flame graphs.

Two scenarios: single events (client.lua, c16) and 100-event batches (batch.lua, c16). For each,
py-spy samples the server and its writer process (`--subprocesses`) while wrk runs: once with
`--gil` (only the thread running Python), printing the frames with the most samples of their own,
and once wall-clock (waits included), written as an SVG flame graph to bench/profiles/.
Loopback only; the server and wrk are started here and stopped here, by PID.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from run import BENCH, start, wrk

OUT = BENCH / "profiles"


def record(pid: int, seconds: int, fmt: str, path: Path, gil: bool) -> None:
    """Sample a process tree with py-spy for `seconds` (only GIL holders if `gil`), writing `fmt` to path."""
    subprocess.run(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            "200",
            "--duration",
            str(seconds),
            "--format",
            fmt,
            "--output",
            str(path),
            *(["--gil"] if gil else []),
        ],
        check=True,
        capture_output=True,
        timeout=seconds + 60,
    )


def top_self(raw: Path, count: int) -> list[tuple[int, str]]:
    """Return the `count` frames with the most samples of their own, from py-spy's raw output."""
    totals: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        totals[stack.split(";")[-1]] += int(samples)
    return [(samples, frame) for frame, samples in totals.most_common(count)]


def profile(name: str, script: str, seconds: int, tmp: Path) -> None:
    """Load the server with one wrk script and profile it; write the SVG, print the top frames."""
    ours = start("ours", tmp / name, False)
    try:
        wrk(ours.url, script, 16, 2, False)
        load = threading.Thread(target=wrk, args=(ours.url, script, 16, seconds + 4, False))
        load.start()
        raw = tmp / f"{name}.txt"
        record(ours.popen.pid, seconds, "raw", raw, gil=True)
        load.join()
        load = threading.Thread(target=wrk, args=(ours.url, script, 16, seconds + 4, False))
        load.start()
        record(ours.popen.pid, seconds, "flamegraph", OUT / f"{name}.svg", gil=False)
        load.join()
    finally:
        ours.stop()
    total = sum(int(line.rpartition(" ")[2]) for line in raw.read_text().splitlines())
    print(
        f"\n## {name}: {total} samples of threads holding the GIL (Python CPU; SQLite and syscalls release it);"
        f" top frames by own samples. Wall-clock flame graph with waits: bench/profiles/{name}.svg"
    )
    for samples, frame in top_self(raw, 15):
        print(f"{samples / total * 100:5.1f}%  {frame}")


def main() -> int:
    """Profile both scenarios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    for tool in ("wrk", "py-spy"):
        if not shutil.which(tool):
            print(
                f"profile needs {tool}: `make system-deps` installs wrk, `make profile` installs py-spy",
                file=sys.stderr,
            )
            return 2
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flakedrop-profile-") as name:
        for scenario, script in (("single", "client.lua"), ("batch", "batch.lua")):
            profile(scenario, script, args.seconds, Path(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
