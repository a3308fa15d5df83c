"""The PostgreSQL backend, for several replicas: row locks in key order, bounded connections; its store."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pg_errors

from exporter.errors import StoreError
from exporter.store.base import SCHEMA_VERSION, UserRow
from exporter.store.local import LocalStore
from exporter.store.sql import USER_COLUMNS, Backend, cohort_migration, rows_to_users

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE users (id BYTEA PRIMARY KEY, first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL,"
        " os TEXT NOT NULL, version TEXT NOT NULL, arch TEXT NOT NULL,"
        " configured SMALLINT NOT NULL, deployed SMALLINT NOT NULL)",
        "CREATE INDEX users_last_seen ON users (last_seen)",
        "CREATE TABLE counters (family TEXT NOT NULL, k1 TEXT NOT NULL, k2 TEXT NOT NULL, k3 TEXT NOT NULL,"
        " value BIGINT NOT NULL, PRIMARY KEY (family, k1, k2, k3))",
        "CREATE TABLE hours (hour BIGINT NOT NULL, version TEXT NOT NULL, users BIGINT NOT NULL,"
        " PRIMARY KEY (hour, version))",
        "CREATE TABLE daily (day TEXT NOT NULL, metric TEXT NOT NULL, version TEXT NOT NULL,"
        " value BIGINT NOT NULL, PRIMARY KEY (day, metric, version))",
        "CREATE TABLE dedup (key BYTEA PRIMARY KEY, at BIGINT NOT NULL)",
        "CREATE INDEX dedup_at ON dedup (at)",
        "CREATE TABLE label_values (label TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (label, value))",
        "INSERT INTO meta (key, value) VALUES ('probe', '0'), ('application', 'flakedrop-telemetry')",
    ),
    # 2: dedup keys start with the client's time; keys in the old format can never match again.
    ("DELETE FROM dedup",),
    # 3: weekly cohorts; users stored before get first and last-seen weeks only (see sqlite.py).
    (
        "ALTER TABLE users ADD COLUMN first_week BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE users ADD COLUMN weeks BIGINT NOT NULL DEFAULT 0",
        *cohort_migration("BIGINT", "", "1::bigint"),
    ),
)
assert len(MIGRATIONS) == SCHEMA_VERSION
MIGRATION_LOCK = 0x464C4B44  # advisory lock id: replicas starting together migrate one at a time


class PostgresStore(LocalStore):
    """A Store on PostgreSQL, shared by several replicas; each holds 1 writer + a few reader connections."""

    def __init__(self, url: str, *, connect_timeout: int = 3, **kwargs: Any) -> None:
        super().__init__(PostgresBackend(url, connect_timeout=connect_timeout), **kwargs)


class PostgresBackend(Backend):
    """The PostgreSQL dialect: READ COMMITTED writes that lock the touched rows in key order."""

    placeholder = "%s"

    def __init__(self, url: str, *, connect_timeout: int = 3) -> None:
        self.url = url
        self.connect_timeout = connect_timeout

    def connect(self, *, writer: bool) -> psycopg.Connection:
        """Open a connection; readers are read-only, the writer uses READ COMMITTED with row locks."""
        conn = psycopg.connect(
            self.url, connect_timeout=self.connect_timeout, application_name="flakedrop-telemetry"
        )
        if not writer:
            conn.read_only = True
        return conn

    def begin(self, cur: Any) -> None:
        """psycopg opens the transaction on the first statement."""

    def claim_dedup(self, cur: Any, keys: list[bytes], now: int) -> set[bytes]:
        """Insert new keys in key order (no deadlocks between replicas) and return those inserted."""
        cur.execute(
            "INSERT INTO dedup (key, at) SELECT k, %s FROM unnest(%s::bytea[]) AS k ORDER BY k "
            "ON CONFLICT DO NOTHING RETURNING key",
            (now, sorted(keys)),
        )
        return {bytes(row[0]) for row in cur.fetchall()}

    def lock_users(self, cur: Any, ids: list[bytes]) -> dict[bytes, UserRow]:
        """Lock the users' rows in id order, so concurrent replicas serialize per user."""
        cur.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (ids,))
        return rows_to_users(cur.fetchall())

    def is_connection_error(self, exc: BaseException) -> bool:
        """An OperationalError (server gone, network) means the connection must be replaced."""
        return isinstance(exc, psycopg.OperationalError)

    def is_retryable(self, exc: BaseException) -> bool:
        """A deadlock or serialization failure between replicas is retried."""
        return isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure)

    def prepare(self) -> None:
        """Create or upgrade the schema under an advisory lock; refuse a database that is not ours."""
        try:
            with psycopg.connect(self.url, connect_timeout=self.connect_timeout) as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                has_meta = _exists(conn, "meta")
                version = 0
                if has_meta:
                    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                    app = conn.execute("SELECT value FROM meta WHERE key = 'application'").fetchone()
                    if app is None or app[0] != "flakedrop-telemetry":
                        raise StoreError(
                            "the database has a 'meta' table this server did not create; refusing it"
                        )
                    version = int(row[0]) if row else 0
                elif _exists(conn, "users"):
                    raise StoreError(
                        "the database has a 'users' table this server did not create; refusing it"
                    )
                if version > SCHEMA_VERSION:
                    raise StoreError(f"schema version {version} is newer than this server's {SCHEMA_VERSION}")
                for number in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[number]:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (str(number + 1),),
                    )
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the PostgreSQL store: {exc}".strip()) from None


def _exists(conn: psycopg.Connection[Any], table: str) -> bool:
    """Return whether a table of this name exists in the search path."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])
