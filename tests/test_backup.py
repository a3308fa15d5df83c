"""Backup, verify and restore on real SQLite files: round trips, every damaged-file case, the CLI's one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import NOW
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import tmpfs

from exporter.aggregates import Folding
from exporter.backup import (
    PLACEHOLDER,
    BackupError,
    KeyMaterial,
    _seal,
    backup_sqlite,
    key_material,
    staged,
)
from exporter.cli import main
from exporter.ingest import UserHasher
from exporter.restore import restore, verify
from exporter.stats import read_stats
from exporter.store.base import Record
from exporter.store.sqlite import SQLiteStore
from exporter.userkey import KEY_FILE

TYPES = ("deployment", "config_created", "heartbeat", "command_executed")
records_strategy = st.lists(
    st.builds(
        Record,
        user=st.integers(0, 40).map(lambda n: n.to_bytes(16, "big")),
        type=st.sampled_from(TYPES),
        version=st.sampled_from(["1.2.0", "1.3.0", "unknown"]),
        os=st.sampled_from(["linux", "darwin", None]),
        arch=st.sampled_from(["amd64", None]),
        success=st.booleans(),
        received_at=st.floats(NOW - 40 * 86400, NOW),
    ),
    max_size=60,
)


def fill(data_dir: Path, records: list[Record], user_id_key: str = "") -> tuple[KeyMaterial, dict]:
    """Make a store in data_dir as a server would (key file, fingerprint, records); return key and /stats."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if not user_id_key:
        (data_dir / KEY_FILE).write_text(os.urandom(32).hex() + "\n")
    key = key_material(data_dir, user_id_key)
    store = SQLiteStore(data_dir / "telemetry.db", clock=lambda: NOW)
    try:
        store.key_fingerprint(key.fingerprint)
        if records:
            store.write(records)
        return key, read_stats(store, Folding("v1.3.0"), NOW)
    finally:
        store.close()


def stats_of(data_dir: Path) -> dict:
    """Return /stats computed from the store in data_dir."""
    store = SQLiteStore(data_dir / "telemetry.db", clock=lambda: NOW)
    try:
        return read_stats(store, Folding("v1.3.0"), NOW)
    finally:
        store.close()


@pytest.fixture
def sample(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A filled data dir and a sound backup of it."""
    records = [
        Record(n.to_bytes(16, "big"), TYPES[n % 4], "1.3.0", "linux", "amd64", n % 3 > 0, NOW - n * 3000)
        for n in range(300)
    ]
    key, _ = fill(tmp_path / "data", records)
    backup_sqlite(tmp_path / "data" / "telemetry.db", tmp_path / "b.db", key)
    yield tmp_path / "data", tmp_path / "b.db"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=records_strategy, with_key_file=st.booleans())
def test_restore_gives_back_the_same_stats_and_key(records: list[Record], with_key_file: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setting = "" if with_key_file else "a-server-setting-key-0123"
        key, stats = fill(root / "src", records, setting)
        backup_sqlite(root / "src" / "telemetry.db", root / "b.db", key)
        info = verify(root / "b.db")
        assert (info.users, info.events) == (stats["unique_users"], stats["total_events"])
        assert info.fingerprint == key.fingerprint and info.key_hex == key.key_hex
        restore(root / "b.db", root / "dst")
        assert stats_of(root / "dst") == stats
        restored_key = root / "dst" / KEY_FILE
        if with_key_file:
            assert restored_key.read_text() == (root / "src" / KEY_FILE).read_text()
        else:
            assert not restored_key.exists()
        tables = sqlite3.connect(root / "dst" / "telemetry.db").execute("SELECT name FROM sqlite_master")
        assert "backup_meta" not in {row[0] for row in tables}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_any_flipped_byte_fails_verify(
    sample: tuple[Path, Path], where: float, mask: int, tmp_path: Path
) -> None:
    _, backup = sample
    damaged = tmp_path / f"flip-{os.getpid()}.db"
    data = bytearray(backup.read_bytes())
    data[int(where * len(data))] ^= mask
    damaged.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=r"damaged|truncated|not a backup"):
        verify(damaged)


def reseal(path: Path, *statements: str) -> None:
    """Change a backup with SQL, then give it a valid hash again (so only the other checks can object)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        conn.execute(statement)
    conn.execute("UPDATE backup_meta SET value = ? WHERE key = 'sha256'", (PLACEHOLDER.decode(),))
    conn.close()
    _seal(path)


CASES = {
    "flipped bytes in the middle": (lambda p: _flip_middle(p), "does not match its SHA-256"),
    "truncated to half": (lambda p: os.truncate(p, p.stat().st_size // 2), "is truncated"),
    "empty file": (lambda p: os.truncate(p, 0), "not a SQLite file"),
    "text file": (lambda p: p.write_text("not a backup\n" * 20), "not a SQLite file"),
    "pg_dump archive": (lambda p: p.write_bytes(b"PGDMP" + b"\0" * 200), "pg_dump archive"),
    "other application's SQLite": (lambda p: reseal(p, "PRAGMA application_id = 7"), "another application"),
    "a live store, not a backup": (lambda p: _drop_meta(p), "without backup_meta"),
    "future schema": (lambda p: reseal(p, "PRAGMA user_version = 99"), "unknown schema version 99"),
    "no key or fingerprint": (
        lambda p: reseal(p, "DELETE FROM backup_meta WHERE key IN ('key_fingerprint', 'user_id_key')"),
        "neither the user-id key",
    ),
    "key swapped": (
        lambda p: reseal(p, f"UPDATE backup_meta SET value = '{'ab' * 32}' WHERE key = 'user_id_key'"),
        "does not match its fingerprint",
    ),
    "users gauge off by one": (
        lambda p: reseal(p, "UPDATE counters SET value = value + 1 WHERE family = 'users'"),
        "users gauge",
    ),
    "activated flag off": (
        lambda p: reseal(p, "UPDATE counters SET value = value + 1 WHERE k1 = 'activated'"),
        "activated users",
    ),
    "a user row lost": (
        lambda p: reseal(p, "DELETE FROM users WHERE id = (SELECT min(id) FROM users)"),
        "disagrees with the user rows",
    ),
}


def _flip_middle(path: Path) -> None:
    """Invert 16 bytes in the middle of the file."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    path.write_bytes(bytes(data))


def _drop_meta(path: Path) -> None:
    """Turn a backup back into a plain store file."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE backup_meta")
    conn.close()


@pytest.mark.parametrize("damage,message", CASES.values(), ids=list(CASES))
def test_bad_backups_fail_verify_and_restore_with_one_line(
    sample: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], damage, message: str
) -> None:
    _, backup = sample
    damage(backup)
    assert main(["verify", str(backup)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("flakedrop-telemetry: verify failed: ")
    target = tmp_path / "restored"
    assert main(["restore", "--from", str(backup), "--data-dir", str(target)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (target / "telemetry.db").exists() and not (target / KEY_FILE).exists()


def test_sound_backup_verifies_with_a_one_line_summary(sample, capsys) -> None:
    _, backup = sample
    assert main(["verify", str(backup)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "ok" in out and "300 users" in out and "user-id key included" in out


def test_a_backup_whose_path_has_uri_characters_verifies(sample, tmp_path: Path) -> None:
    """A file name with ?, # and % is opened as that file, not parsed as a URI's query or fragment."""
    _, backup = sample
    odd = tmp_path / "odd?name#1%20.db"
    shutil.copyfile(backup, odd)
    assert verify(odd).users == 300


def test_restore_refuses_a_dir_with_a_store_unless_forced(sample, tmp_path: Path) -> None:
    data, backup = sample
    other_key, _ = fill(
        tmp_path / "other", [Record(b"x" * 16, "heartbeat", "1.2.0", "linux", "arm64", None, NOW)]
    )
    (tmp_path / "other" / "telemetry.db-wal").write_bytes(b"stale wal")
    with pytest.raises(BackupError, match="already holds a store"):
        restore(backup, tmp_path / "other")
    assert (tmp_path / "other" / KEY_FILE).read_text().strip() == other_key.key_hex
    restore(backup, tmp_path / "other", force=True)
    assert not (tmp_path / "other" / "telemetry.db-wal").exists()
    assert stats_of(tmp_path / "other") == stats_of(data)
    assert (tmp_path / "other" / KEY_FILE).read_text() == (data / KEY_FILE).read_text()


def test_restore_refuses_to_overwrite_another_key(sample, tmp_path: Path) -> None:
    _, backup = sample
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / KEY_FILE).write_text("cd" * 32 + "\n")
    with pytest.raises(BackupError, match="another user-id key"):
        restore(backup, tmp_path / "fresh")


def test_backup_refuses_a_key_that_did_not_fill_the_store(sample, tmp_path: Path) -> None:
    data, _ = sample
    wrong = KeyMaterial("ef" * 32, UserHasher(bytes.fromhex("ef" * 32)).fingerprint())
    with pytest.raises(BackupError, match="does not match the one this store was filled with"):
        backup_sqlite(data / "telemetry.db", tmp_path / "wrong.db", wrong)
    assert list(tmp_path.glob("wrong.db*")) == []


def test_server_key_setting_gives_a_fingerprint_and_a_loud_warning(tmp_path: Path, capsys) -> None:
    fill(tmp_path / "data", [], "a-server-setting-key-0123")
    args = ["backup", "--data-dir", str(tmp_path / "data"), "--to", str(tmp_path / "b.db")]
    assert main([*args, "--user-id-key", "a-server-setting-key-0123"]) == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and "keep the key itself somewhere safe" in captured.err
    assert "key NOT included" in captured.out
    assert oct(os.stat(tmp_path / "b.db").st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    "args,message,code",
    [
        (["--data-dir", "{tmp}/nothing"], "no store at", 1),
        (["--data-dir", "{tmp}/data", "--to", "{tmp}/missing/b.db"], "does not exist", 1),
        # The settings table refuses an unknown scheme before any store is touched (a SettingError: 2).
        (["--database-url", "mysql://x"], "--database-url: expected sqlite:///", 2),
    ],
    ids=["no store", "no target dir", "unknown URL"],
)
def test_backup_cli_errors_are_one_line(
    tmp_path: Path, capsys, args: list[str], message: str, code: int
) -> None:
    fill(tmp_path / "data", [])
    argv = ["backup", "--to", str(tmp_path / "b.db"), *[a.format(tmp=tmp_path) for a in args]]
    if "--data-dir" not in argv:
        argv += ["--data-dir", str(tmp_path / "data")]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "b.db").exists()


def test_staged_leaves_nothing_on_error(tmp_path: Path) -> None:
    final = tmp_path / "out.db"
    with pytest.raises(RuntimeError), staged(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk fell off")
    assert list(tmp_path.iterdir()) == []


def test_postgres_without_pg_dump_says_the_command(tmp_path: Path) -> None:
    from exporter.backup import backup_postgres

    with pytest.raises(BackupError, match=r"not installed.*pg_dump --format=custom --file="):
        backup_postgres("postgresql://u@127.0.0.1/db", tmp_path / "b.pgdump", find=lambda: None)
    assert list(tmp_path.iterdir()) == []


# ---- real processes: a server under load, a full disk, SIGKILL -------------------------------------------------

HEADERS = {"Content-Type": "application/json"}


def big_store(data_dir: Path, users: int = 30000) -> None:
    """Fill a store with many users, so its file is a few MB."""
    records = [
        Record(n.to_bytes(16, "big"), "deployment", "1.3.0", "linux", "amd64", True, NOW - n)
        for n in range(users)
    ]
    fill(data_dir, records)


class Writers:
    """Four threads posting distinct events to a server, counting acknowledgements, for a bounded time."""

    def __init__(self, url: str, per_thread: int = 3000) -> None:
        import threading

        self.url, self.per_thread = url, per_thread
        self.acks = [0, 0, 0, 0]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.post, args=(n,), daemon=True) for n in range(4)]
        for thread in self.threads:
            thread.start()

    def post(self, n: int) -> None:
        """Post up to per_thread events (50 users per thread), counting each 200."""
        from procs import http

        for i in range(self.per_thread):
            if self.stop.is_set():
                return
            body = {
                "type": "deployment",
                "user_id": f"{n:02x}{i % 50:030x}",
                "version": "v1.3.0",
                "os": "linux",
            }
            body["success"] = i % 7 != 0
            if http("POST", self.url + "/v1/events", json.dumps(body).encode(), HEADERS)[0] == 200:
                self.acks[n] += 1

    def total(self) -> int:
        """Events acknowledged so far."""
        return sum(self.acks)

    def finish(self) -> int:
        """Stop the writers, wait for them, return every acknowledged event."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        return self.total()


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=120, **kwargs
    )


def get_stats(url: str) -> dict:
    """GET /stats without its generation time."""
    from procs import http

    status, body, _ = http("GET", url + "/stats")
    assert status == 200
    stats = json.loads(body)
    stats.pop("generated_at")
    return stats


@pytest.mark.slow
def test_backup_while_four_writers_post_restores_what_was_acknowledged(tmp_path: Path) -> None:
    from procs import Server, http

    source = Server(tmp_path / "src").wait_ready()
    writers = Writers(source.url)
    try:
        deadline = time.monotonic() + 60
        while writers.total() < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        acked_before = writers.total()
        result = cli(
            "backup",
            "--data-dir",
            str(tmp_path / "src"),
            "--to",
            str(tmp_path / "b.db"),
            "--step-pages",
            "2",
            "--pause",
            "0.01",
        )
        during = writers.total() - acked_before
    finally:
        acked_total = writers.finish()
        source.stop()
    assert result.returncode == 0, result.stderr
    assert during > 0, "no event was acknowledged while the backup ran; the test proved nothing"
    assert cli("verify", str(tmp_path / "b.db")).returncode == 0
    from_backup = stats_from_file(tmp_path / "b.db", tmp_path / "copy")
    assert acked_before <= from_backup["total_events"] <= acked_total
    assert from_backup["total_deployments"] == from_backup["total_events"]
    assert sum(from_backup["os_breakdown"].values()) == from_backup["unique_users"]
    assert (
        cli("restore", "--from", str(tmp_path / "b.db"), "--data-dir", str(tmp_path / "dst")).returncode == 0
    )
    restored = Server(tmp_path / "dst").wait_ready()
    try:
        assert get_stats(restored.url) == from_backup
        known = {"type": "deployment", "user_id": f"{0:02x}{0:030x}", "version": "v1.3.0", "os": "linux"}
        http("POST", restored.url + "/v1/events", json.dumps({**known, "success": True}).encode(), HEADERS)
        after = get_stats(restored.url)
        assert after["unique_users"] == from_backup["unique_users"], "a known user was counted again"
        assert after["total_events"] == from_backup["total_events"] + 1
    finally:
        restored.stop()


def stats_from_file(backup: Path, scratch: Path) -> dict:
    """Return /stats as a server would compute it from the store inside a backup file."""
    scratch.mkdir()
    shutil.copyfile(backup, scratch / "telemetry.db")
    store = SQLiteStore(scratch / "telemetry.db")
    try:
        stats = read_stats(store, Folding("v1.3.5"), time.time())
    finally:
        store.close()
    stats.pop("generated_at")
    return stats


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs."""
    with tmpfs(tmp_path / "fs", "1m") as target:
        yield target


@pytest.mark.slow
def test_backup_onto_a_full_filesystem_fails_clearly_and_leaves_no_file(
    tmp_path: Path, tiny_fs: Path
) -> None:
    big_store(tmp_path / "data")
    assert (tmp_path / "data" / "telemetry.db").stat().st_size > 1536 * 1024  # beyond the 1 MiB tmpfs
    result = cli("backup", "--data-dir", str(tmp_path / "data"), "--to", str(tiny_fs / "b.db"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "full" in result.stderr, result.stderr
    assert list(tiny_fs.iterdir()) == []


@pytest.mark.slow
def test_backup_killed_halfway_leaves_no_file_under_the_final_name(tmp_path: Path) -> None:
    big_store(tmp_path / "data", users=8000)
    final = tmp_path / "b.db"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "backup",
            "--data-dir",
            str(tmp_path / "data"),
            "--to",
            str(final),
            "--step-pages",
            "1",
            "--pause",
            "0.01",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        tmp = final.with_name(f"b.db.tmp-{proc.pid}")
        deadline = time.monotonic() + 30
        while not (tmp.exists() and tmp.stat().st_size > 64 * 1024) and time.monotonic() < deadline:
            assert proc.poll() is None, "the backup ended before it could be killed"
            time.sleep(0.01)
        assert tmp.exists(), "the backup never started writing"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert not final.exists()
    assert cli("verify", str(tmp)).returncode == 1
