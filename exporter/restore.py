"""Check a backup file (verify) and turn it back into a data dir (restore), atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from exporter.backup import (
    FORMAT_VERSION,
    HASH_LEN,
    BackupError,
    file_hash,
    find_all,
    fsync_dir,
    staged,
)
from exporter.config import DB_FILE
from exporter.errors import StoreError
from exporter.ingest import UserHasher
from exporter.store.base import SCHEMA_VERSION
from exporter.store.sqlite import APPLICATION_ID
from exporter.userkey import key_path as key_file_of
from exporter.userkey import read_key, write_key

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_MAGIC = b"PGDMP"


@dataclass(frozen=True)
class BackupInfo:
    """What verify found in a sound backup."""

    path: Path
    schema_version: int
    server_version: str
    created_at: str
    key_hex: str | None
    fingerprint: str
    users: int
    events: int
    sha256: str

    def summary(self) -> str:
        """Return the one-line report of a sound backup."""
        key = "user-id key included" if self.key_hex else f"key NOT included (fingerprint {self.fingerprint})"
        return (
            f"{self.path}: ok, backup of {self.created_at} by server {self.server_version}, schema "
            f"{self.schema_version}, {self.users} users, {self.events} events, {key}, sha256 {self.sha256[:16]}"
        )


def _header(path: Path) -> bytes:
    """Return the file's first 100 bytes (SQLite's header), or raise a clear error when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(100)
    except FileNotFoundError:
        raise BackupError(f"{path}: no such file") from None
    except OSError as exc:
        raise BackupError(f"{path}: cannot read it: {exc.strerror or exc}") from None


def verify(path: Path) -> BackupInfo:
    """Check every promise of a backup file; return what it holds or raise BackupError with one line."""
    head = _header(path)
    if head.startswith(PG_MAGIC):
        raise BackupError(
            f"{path} is a pg_dump archive, not a SQLite backup: check it with `pg_restore --list {path}` "
            "and restore it with pg_restore"
        )
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        raise BackupError(f"{path} is not a backup: not a SQLite file")
    page_size = int.from_bytes(head[16:18], "big")
    expected = (65536 if page_size == 1 else page_size) * int.from_bytes(head[28:32], "big")
    size = path.stat().st_size
    if size < expected:
        raise BackupError(f"{path} is truncated: {size} bytes of the {expected} its header promises")
    try:
        conn = sqlite3.connect(
            path.resolve().as_uri() + "?mode=ro&immutable=1", uri=True
        )  # quotes ?, # and %
    except sqlite3.Error as exc:
        raise BackupError(f"{path} cannot be opened: {exc}") from None
    try:
        info = _check(conn, path)
    except (sqlite3.DatabaseError, ValueError) as exc:  # ValueError: text or hex that a flip made invalid
        raise BackupError(f"{path} is damaged: {exc}") from None
    finally:
        conn.close()
    return info


def _check(conn: sqlite3.Connection, path: Path) -> BackupInfo:
    """Run the checks that need SQL, in the order that gives the most telling message first."""
    if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        raise BackupError(f"{path} is not a backup: a SQLite file of another application")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "backup_meta" not in tables:
        raise BackupError(f"{path} is not a backup: a telemetry store without backup_meta (use `backup`)")
    meta = dict(conn.execute("SELECT key, value FROM backup_meta").fetchall())
    stored = meta.get("sha256", "")
    if len(stored) != HASH_LEN:
        raise BackupError(f"{path} is damaged: no content hash in backup_meta")
    offsets = find_all(path, stored.encode("ascii"))
    if len(offsets) != 1 or file_hash(path, offsets[0]) != stored:
        raise BackupError(f"{path} is damaged: its content does not match its SHA-256 (bytes changed)")
    problems = conn.execute("PRAGMA integrity_check").fetchall()
    if problems != [("ok",)]:
        raise BackupError(f"{path} is damaged: integrity check says {problems[0][0]}")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise BackupError(f"{path}: unknown backup format {meta.get('format_version')!r}; upgrade the server")
    schema = conn.execute("PRAGMA user_version").fetchone()[0]
    if not 1 <= schema <= SCHEMA_VERSION or meta.get("schema_version") != str(schema):
        raise BackupError(f"{path}: unknown schema version {schema}; this server knows 1 to {SCHEMA_VERSION}")
    fingerprint = meta.get("key_fingerprint", "")
    key_hex = meta.get("user_id_key")
    if not fingerprint:
        raise BackupError(f"{path} holds neither the user-id key nor its fingerprint")
    if key_hex is not None and UserHasher(bytes.fromhex(key_hex)).fingerprint() != fingerprint:
        raise BackupError(f"{path}: the user-id key does not match its fingerprint")
    store_print = conn.execute("SELECT value FROM meta WHERE key = 'key_fingerprint'").fetchone()
    if store_print and store_print[0] != fingerprint:
        raise BackupError(f"{path}: the store was filled with another user-id key than the one recorded")
    users = _check_aggregates(conn, path)
    events = conn.execute("SELECT coalesce(sum(value), 0) FROM counters WHERE family = 'events'").fetchone()[
        0
    ]
    return BackupInfo(
        path,
        schema,
        meta.get("server_version", "?"),
        meta.get("created_at", "?"),
        key_hex,
        fingerprint,
        users,
        int(events),
        stored,
    )


def _check_aggregates(conn: sqlite3.Connection, path: Path) -> int:
    """Check the user gauges, flags and hour buckets against the user rows; return the user count."""
    rows = dict(
        ((os_, version, arch), n)
        for os_, version, arch, n in conn.execute(
            "SELECT os, version, arch, count(*) FROM users GROUP BY 1, 2, 3"
        )
    )
    gauges = dict(
        ((k1, k2, k3), v)
        for k1, k2, k3, v in conn.execute("SELECT k1, k2, k3, value FROM counters WHERE family = 'users'")
        if v
    )
    if gauges != rows:
        raise BackupError(
            f"{path}: the users gauge ({sum(gauges.values())}) disagrees with the user rows ({sum(rows.values())})"
        )
    users = sum(rows.values())
    hours = conn.execute("SELECT coalesce(sum(users), 0) FROM hours").fetchone()[0]
    if hours != users:
        raise BackupError(
            f"{path}: the hourly activity buckets ({hours}) disagree with the user rows ({users})"
        )
    for flag, column in (("activated", "deployed"), ("configured", "configured")):
        counted = conn.execute(
            "SELECT coalesce(sum(value), 0) FROM counters WHERE family = 'user_flags' AND k1 = ?", (flag,)
        ).fetchone()[0]
        actual = conn.execute(f"SELECT count(*) FROM users WHERE {column}").fetchone()[0]
        if counted != actual:
            raise BackupError(f"{path}: {flag} users ({counted}) disagree with the user rows ({actual})")
    return users


def holds_store(data_dir: Path) -> bool:
    """Return whether the data dir already holds a store (a non-empty database or its WAL)."""
    db = data_dir / DB_FILE
    wal = data_dir / (DB_FILE + "-wal")
    return any(p.exists() and p.stat().st_size > 0 for p in (db, wal))


def restore(source: Path, data_dir: Path, *, force: bool = False) -> BackupInfo:
    """Verify the backup, then write its store and key into data_dir atomically; return what it held."""
    info = verify(source)
    key_path = key_file_of(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        old_key = read_key(key_path).hex() if key_path.exists() else None
        if not force and holds_store(data_dir):
            raise BackupError(
                f"{data_dir} already holds a store; stop its server and pass --force to replace it"
            )
        if not force and info.key_hex and old_key not in (None, info.key_hex):
            raise BackupError(f"{key_path} holds another user-id key; pass --force to replace it")
        db = data_dir / DB_FILE
        with staged(db) as tmp_db:
            shutil.copyfile(source, tmp_db)
            os.chmod(tmp_db, 0o600)
            conn = sqlite3.connect(tmp_db, isolation_level=None)
            try:
                conn.execute("DROP TABLE backup_meta")
            finally:
                conn.close()
            if info.key_hex:
                with staged(key_path) as tmp_key:
                    write_key(tmp_key, bytes.fromhex(info.key_hex))
            for stale in ("-wal", "-shm"):  # an old WAL would be replayed onto the restored file
                with contextlib.suppress(FileNotFoundError):
                    (data_dir / (DB_FILE + stale)).unlink()
        fsync_dir(data_dir)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot write into {data_dir}: {exc}") from None
    except OSError as exc:
        raise BackupError(f"cannot write into {data_dir}: {exc.strerror or exc}") from None
    except StoreError as exc:  # the data dir's own key file is unreadable
        raise BackupError(str(exc)) from None
    return info
