"""Demo traffic: realistic users sending the client's exact bytes to a running server."""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from exporter import clientbytes
from exporter.config import Config

OS_MIX = (("darwin", 0.55), ("linux", 0.35), ("windows", 0.10))
ARCH_BY_OS = {
    "darwin": (("arm64", 0.8), ("amd64", 0.2)),
    "linux": (("amd64", 0.85), ("arm64", 0.15)),
    "windows": (("amd64", 1.0),),
}
VERSION_MIX = (("v1.1.0", 0.10), ("v1.2.0", 0.20), ("v1.3.0", 0.30), ("v1.3.5", 0.40))
BAD_RELEASE = "v1.3.0"
FAILURE_RATE = 0.05
BAD_FAILURE_RATE = 0.35
CONFIG_ONLY_SHARE = 0.3


@dataclass(frozen=True)
class SimEvent:
    """One request the simulator sends, with what it means for the expected totals."""

    kind: str
    body: bytes
    version: str
    os: str | None
    success: bool | None


@dataclass
class Expected:
    """What the server should count after the traffic (for tests and the summary line)."""

    users: int = 0
    deployments: Counter[tuple[str, bool]] = field(default_factory=Counter)  # (version, success)
    configs: int = 0
    heartbeats: int = 0
    users_by_version: Counter[str] = field(default_factory=Counter)
    users_by_os: Counter[str] = field(default_factory=Counter)

    def failure_ratio(self, version: str | None = None) -> float:
        """Return the failure ratio of all deployments, or of one version's."""
        ok = sum(n for (v, s), n in self.deployments.items() if s and version in (None, v))
        bad = sum(n for (v, s), n in self.deployments.items() if not s and version in (None, v))
        return bad / (ok + bad) if ok + bad else 0.0


def _pick(rng: random.Random, mix: tuple[tuple[str, float], ...]) -> str:
    """Pick a value from (value, weight) pairs."""
    return rng.choices([v for v, _ in mix], weights=[w for _, w in mix])[0]


def plan_traffic(
    users: int, days: int, seed: int = 7, now: float | None = None
) -> tuple[list[SimEvent], Expected]:
    """Return the events of `users` users over `days` days, and the totals they should produce."""
    rng = random.Random(seed)
    now = time.time() if now is None else now
    start_ns = int((now - days * 86400) * 1e9)
    events: list[SimEvent] = []
    expected = Expected(users=users)
    for _ in range(users):
        user_id = f"{rng.getrandbits(128):032x}"
        os_ = _pick(rng, OS_MIX)
        arch = _pick(rng, ARCH_BY_OS[os_])
        version = _pick(rng, VERSION_MIX)
        expected.users_by_version[version.lstrip("v")] += 1
        t = start_ns + int(rng.random() * days * 86400e9 * 0.5)
        events.append(
            SimEvent("config_created", clientbytes.config_created(user_id, version, t), version, None, None)
        )
        expected.configs += 1
        if rng.random() < CONFIG_ONLY_SHARE:
            expected.users_by_os["unknown"] += 1  # config_created carries no os
            continue
        expected.users_by_os[os_] += 1
        active_days = rng.randint(1, max(1, days))
        fail = BAD_FAILURE_RATE if version == BAD_RELEASE else FAILURE_RATE
        for day in range(active_days):
            t += int(86400e9 * rng.uniform(0.2, 1.0) * (days / active_days) * 0.5) + day
            metrics = None
            if rng.random() < 0.5:
                metrics = {
                    "total_deployments": day * 3,
                    "weekly_deployments": 3,
                    "last_active_date": "2026-11-26",
                    "error_rate": fail,
                }
            events.append(
                SimEvent(
                    "heartbeat",
                    clientbytes.heartbeat(user_id, version, os_, arch, t, metrics),
                    version,
                    os_,
                    None,
                )
            )
            expected.heartbeats += 1
            for n in range(rng.randint(1, 4)):
                success = rng.random() >= fail
                body = clientbytes.deployment(user_id, version, os_, success, rng.randint(1, 40), t + n + 1)
                events.append(SimEvent("deployment", body, version, os_, success))
                expected.deployments[(version.lstrip("v"), success)] += 1
    return events, expected


class _Sender:
    """Posts bodies over one keep-alive connection per thread."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.https = parsed.scheme == "https"
        self.path = parsed.path.rstrip("/") + "/v1/events"
        self.timeout = timeout
        self.local = threading.local()

    def post(self, body: bytes, version: str) -> int:
        """Send one event like the client does; return the HTTP status (0 on a network error)."""
        for _attempt in range(2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
                conn = self.local.conn = cls(self.host, self.port, timeout=self.timeout)
            try:
                conn.request(
                    "POST",
                    self.path,
                    body=body,
                    headers={
                        "Content-Type": "application/json",
                        "User-Agent": clientbytes.USER_AGENT.format(version=version),
                    },
                )
                resp = conn.getresponse()
                resp.read()
                return resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
        return 0


def send(url: str, events: list[SimEvent], concurrency: int = 8, progress: bool = True) -> Counter[int]:
    """Send every event with a few threads (a user's events may interleave); return a count of statuses."""
    sender = _Sender(url)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    chunks = [events[i::concurrency] for i in range(concurrency)]
    done = [0]

    def work(chunk: list[SimEvent]) -> None:
        for event in chunk:
            status = sender.post(event.body, event.version)
            with lock:
                statuses[status] += 1
                done[0] += 1

    threads = [threading.Thread(target=work, args=(chunk,), daemon=True) for chunk in chunks]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        if progress:
            _bar(done[0], len(events))
        time.sleep(0.2)
    if progress:
        _bar(done[0], len(events))
        print(file=sys.stderr)
    return statuses


def _bar(done: int, total: int, width: int = 40) -> None:
    """Draw a progress bar on stderr."""
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} events")
    sys.stderr.flush()


def seed_store(config: Config, users: int, days: int, seed: int = 7, progress: bool = True) -> int:
    """Bulk-seed a store without HTTP: per user a heartbeat and, for most, a deployment, over `days` days."""
    from exporter.app import load_user_key
    from exporter.ingest import UserHasher
    from exporter.store import Record, open_store

    store = open_store(config.store_url, max_versions=config.max_versions, dedup_window=config.dedup_window)
    hasher = UserHasher(load_user_key(config))
    if store.key_fingerprint(hasher.fingerprint()) != hasher.fingerprint():
        store.close()
        raise SystemExit(
            "the store was filled with another user-id key; use the same --data-dir or --user-id-key"
        )
    rng = random.Random(seed)
    now = time.time()
    written = 0
    try:
        for start in range(0, users, 5000):
            records = []
            for n in range(start, min(start + 5000, users)):
                user = hasher(f"{seed:08x}{n:024x}")
                os_ = _pick(rng, OS_MIX)
                version = _pick(rng, VERSION_MIX).lstrip("v")
                at = now - rng.random() * days * 86400
                records.append(Record(user, "heartbeat", version, os_, _pick(rng, ARCH_BY_OS[os_]), None, at))
                if rng.random() >= CONFIG_ONLY_SHARE:
                    fail = BAD_FAILURE_RATE if version == BAD_RELEASE.lstrip("v") else FAILURE_RATE
                    records.append(Record(user, "deployment", version, os_, None, rng.random() >= fail, at))
            store.write(records)
            written += len(records)
            if progress:
                _bar(min(start + 5000, users), users)
    finally:
        store.close()
    if progress:
        print(file=sys.stderr)
    return written


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulate subcommand's flags."""
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="base URL of a running server")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="write into the store of --data-dir/--database-url directly (bulk seeding, with history)",
    )
    parser.add_argument("--data-dir", default="./data", help="with --direct: the server's data dir")
    parser.add_argument("--database-url", default="", help="with --direct: the server's store URL")
    parser.add_argument("--user-id-key", default="", help="with --direct: the server's --user-id-key, if set")
    parser.add_argument("--users", type=int, default=200, help="number of simulated installations")
    parser.add_argument(
        "--days", type=int, default=14, help="days of activity (spread over client timestamps)"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed, for repeatable traffic")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel connections")
    parser.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    parser.add_argument(
        "--force",
        action="store_true",
        help="send even if the server already holds events (simulated users can never be told apart later)",
    )
    parser.add_argument("--read-token", default="", help="the server's read token, to check its /stats first")


class Refused(Exception):
    """simulate will not send; the message is the one line it prints."""


def held_events(url: str, read_token: str, timeout: float = 10.0) -> int:
    """Return how many events the server at url already holds (its /stats total_events), or raise Refused."""
    stats_url = url.rstrip("/") + "/stats"
    headers = {"Authorization": f"Bearer {read_token}"} if read_token else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(stats_url, headers=headers), timeout=timeout
        ) as resp:
            total = json.loads(resp.read())["total_events"]
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise Refused(f"{stats_url} needs the read token: pass --read-token (or --force)") from None
        raise Refused(f"{stats_url} answered {exc.code}; pass --force to send without checking") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise Refused(f"cannot read {stats_url} ({reason}); is the server running?") from None
    if not isinstance(total, int):
        raise Refused(f"{stats_url} has no numeric total_events; pass --force to send without checking")
    return total


def run_simulate(args: argparse.Namespace) -> int:
    """Plan and send the traffic (only to an empty server unless --force); print a one-line summary."""
    if args.direct:
        config = Config(data_dir=args.data_dir, database_url=args.database_url, user_id_key=args.user_id_key)
        written = seed_store(config, args.users, args.days, args.seed, progress=not args.no_progress)
        print(f"wrote {written} events from {args.users} users into {config.store_url.split('@')[-1]}")
        return 0
    if not args.force:
        try:
            held = held_events(args.url, args.read_token)
        except Refused as exc:
            print(f"flakedrop-telemetry simulate: {exc}", file=sys.stderr)
            return 1
        if held:
            print(
                f"flakedrop-telemetry simulate: refusing: {args.url} already holds {held} events, and simulated "
                "users could never be told apart from real ones; use an empty server, or --force",
                file=sys.stderr,
            )
            return 1
    events, expected = plan_traffic(args.users, args.days, args.seed)
    statuses = send(args.url, events, args.concurrency, progress=not args.no_progress)
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    print(
        f"sent {len(events)} events from {expected.users} users: {ok} accepted, "
        f"{len(events) - ok} failed; failure ratio {expected.failure_ratio():.3f} overall, "
        f"{expected.failure_ratio(BAD_RELEASE.lstrip('v')):.3f} on {BAD_RELEASE}"
    )
    return 0 if ok == len(events) else 1
