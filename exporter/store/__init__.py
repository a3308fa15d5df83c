"""Stores: the Store contract, its SQLite and PostgreSQL backends, in this process or a writer child.

Module map: base (the contract and its values), planner (the pure batch planner), sql (the SQL and the
Writer), commit (group commit on a thread), readers (the read pool), local (the in-process store),
messages and process (the writer-process store), sqlite and postgres (the backends).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.errors import StoreError
from exporter.store.base import Arrivals, DailyRow, Record, Snapshot, Store, UserRow, WriteResult
from exporter.store.sql import Backend


def open_store(url: str, *, writer_process: bool = False, **kwargs: Any) -> Store:
    """Open the store a URL names: sqlite:///path or postgresql://...; optionally commit in a child process.

    kwargs go to the store: max_versions, dedup_window, clock, read_connections, and cpu (writer
    process only) or gather_delay (in-process only).
    """
    if writer_process:
        from exporter.store.process import WriterProcessStore

        return WriterProcessStore(url, **kwargs)
    from exporter.store.local import LocalStore

    return LocalStore(open_backend(url), **kwargs)


def sqlite_file(url: str) -> Path | None:
    """Return the file a sqlite:///path store URL names, or None for another scheme."""
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def open_backend(url: str) -> Backend:
    """Return the backend a store URL names (connects lazily; nothing is created yet)."""
    path = sqlite_file(url)
    if path is not None:
        from exporter.store.sqlite import SQLiteBackend

        return SQLiteBackend(path)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from exporter.store.postgres import PostgresBackend
        except ImportError as exc:
            raise StoreError(
                f"PostgreSQL support needs psycopg 3: pip install 'flakedrop-telemetry[postgres]' ({exc})"
            ) from None
        return PostgresBackend(url)
    raise StoreError(
        f"unsupported --database-url {url.split(':', 1)[0]!r}: use sqlite:///path or postgresql://..."
    )


__all__ = [
    "Arrivals",
    "DailyRow",
    "Record",
    "Snapshot",
    "Store",
    "StoreError",
    "UserRow",
    "WriteResult",
    "open_backend",
    "open_store",
    "sqlite_file",
]
