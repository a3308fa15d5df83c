"""The embedded SQLite backend: WAL, synchronous=FULL, one writer at a time; and its in-process store."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from exporter.errors import StoreError
from exporter.store.base import SCHEMA_VERSION, UserRow, dedup_stamp
from exporter.store.local import LocalStore
from exporter.store.sql import USER_COLUMNS, Backend, cohort_migration, rows_to_users

APPLICATION_ID = 0x464C4B44  # "FLKD": marks the file as ours, so a foreign database is never touched

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE users (id BLOB PRIMARY KEY, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,"
        " os TEXT NOT NULL, version TEXT NOT NULL, arch TEXT NOT NULL,"
        " configured INTEGER NOT NULL, deployed INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE INDEX users_last_seen ON users (last_seen)",
        "CREATE TABLE counters (family TEXT NOT NULL, k1 TEXT NOT NULL, k2 TEXT NOT NULL, k3 TEXT NOT NULL,"
        " value INTEGER NOT NULL, PRIMARY KEY (family, k1, k2, k3)) WITHOUT ROWID",
        "CREATE TABLE hours (hour INTEGER NOT NULL, version TEXT NOT NULL, users INTEGER NOT NULL,"
        " PRIMARY KEY (hour, version)) WITHOUT ROWID",
        "CREATE TABLE daily (day TEXT NOT NULL, metric TEXT NOT NULL, version TEXT NOT NULL,"
        " value INTEGER NOT NULL, PRIMARY KEY (day, metric, version)) WITHOUT ROWID",
        "CREATE TABLE dedup (key BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE INDEX dedup_at ON dedup (at)",
        "CREATE TABLE label_values (label TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (label, value))"
        " WITHOUT ROWID",
        "INSERT INTO meta (key, value) VALUES ('probe', '0')",
    ),
    # 2: dedup keys start with the client's time (older keys can never match again), and the two
    # secondary indexes go: each dirtied a random page per event; pruning walks the primary keys instead.
    (
        "DELETE FROM dedup",
        "DROP INDEX dedup_at",
        "DROP INDEX users_last_seen",
    ),
    # 3: weekly cohorts. Users stored before get their cohort from first_seen and, as active weeks, the
    # first and the last-seen one; the weeks between are unknown (never recorded before this version).
    (
        "ALTER TABLE users ADD COLUMN first_week INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE users ADD COLUMN weeks INTEGER NOT NULL DEFAULT 0",
        *cohort_migration("INTEGER", " WITHOUT ROWID", "1"),
    ),
)
assert len(MIGRATIONS) == SCHEMA_VERSION


class SQLiteStore(LocalStore):
    """A Store in one SQLite file; safe for one process (or several, serialized by SQLite's lock)."""

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        self.path = Path(path)
        super().__init__(SQLiteBackend(self.path), **kwargs)


class SQLiteBackend(Backend):
    """The SQLite dialect: one file, WAL, BEGIN IMMEDIATE for writes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self, *, writer: bool) -> sqlite3.Connection:
        """Open a connection with WAL, FULL sync and a busy timeout."""
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA synchronous = FULL")
        if not writer:
            conn.execute("PRAGMA query_only = 1")
        return conn

    def end_read(self, conn: Any) -> None:
        """Autocommit reads hold no transaction; nothing to end."""

    def begin(self, cur: Any) -> None:
        """Take the write lock up front so group commits never deadlock on upgrade."""
        cur.execute("BEGIN IMMEDIATE")

    def claim_dedup(self, cur: Any, keys: list[bytes], now: int) -> set[bytes]:
        """Insert new keys and return those inserted (RETURNING skips existing ones)."""
        claimed: set[bytes] = set()
        for start in range(0, len(keys), 400):
            chunk = keys[start : start + 400]
            values = ", ".join(["(?, ?)"] * len(chunk))
            params = [p for key in chunk for p in (key, now)]
            cur.execute(
                f"INSERT INTO dedup (key, at) VALUES {values} ON CONFLICT DO NOTHING RETURNING key", params
            )
            claimed.update(bytes(row[0]) for row in cur.fetchall())
        return claimed

    def lock_users(self, cur: Any, ids: list[bytes]) -> dict[bytes, UserRow]:
        """Read the users' rows (BEGIN IMMEDIATE already holds the only write lock)."""
        found: dict[bytes, UserRow] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            cur.execute(
                f"SELECT {USER_COLUMNS} FROM users WHERE id IN ({', '.join('?' * len(chunk))})", chunk
            )
            found.update(rows_to_users(cur.fetchall()))
        return found

    def prune_dedup(self, cur: Any, now: int, window: int) -> None:
        """Delete expired keys: a range at the start of the key order, and (rarely) far-future stamps."""
        expired = now - window
        cur.execute("DELETE FROM dedup WHERE key < ? AND at < ?", (dedup_stamp(expired * 10**9), expired))
        cur.execute(
            "DELETE FROM dedup WHERE key > ? AND at < ?", (dedup_stamp((now + 86400) * 10**9), expired)
        )

    def is_connection_error(self, exc: BaseException) -> bool:
        """SQLite connections stay usable after failed statements."""
        return isinstance(exc, sqlite3.ProgrammingError)

    def prepare(self) -> None:
        """Refuse foreign or corrupt files, then bring the schema up to date."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if os.statvfs(self.path.parent).f_flag & os.ST_RDONLY:
            raise StoreError(
                f"the data directory {self.path.parent} is on a read-only file system; the store needs to write "
                "(mount it read-write, or point --data-dir elsewhere)"
            )
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from None
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if existed and app_id != APPLICATION_ID and tables:
                raise StoreError(
                    f"{self.path} is a SQLite database that this server did not create (application_id "
                    f"{app_id:#x}); refusing to touch it. Point --data-dir or --database-url elsewhere."
                )
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this server's {SCHEMA_VERSION}; "
                    "upgrade the server."
                )
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: cannot switch to WAL journal mode (got {mode})")
            for number in range(version, SCHEMA_VERSION):
                conn.execute("BEGIN IMMEDIATE")
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not a usable FlakeDrop telemetry database ({exc}); it may be corrupt or "
                "not a SQLite file. It was left untouched: move it away or restore it from a backup."
            ) from None
        finally:
            conn.close()
        os.chmod(self.path, 0o600)
