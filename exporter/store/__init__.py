"""Stores: the Store contract and its SQLite and PostgreSQL implementations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.errors import StoreError
from exporter.store.base import DailyRow, Record, Snapshot, Store, UserRow, WriteResult


def open_store(url: str, *, writer_process: bool = False, **kwargs: Any) -> Store:
    """Open the store a URL names: sqlite:///path or postgresql://...; optionally commit in a child process."""
    if writer_process:
        from exporter.store.process import WriterProcessStore

        return WriterProcessStore(url, lambda: open_store(url, read_only=True), **kwargs)
    if url.startswith("sqlite:///"):
        from exporter.store.sqlite import SQLiteStore

        return SQLiteStore(Path(url[len("sqlite:///") :]), **kwargs)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from exporter.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"PostgreSQL support needs psycopg 3: pip install 'flakedrop-telemetry[postgres]' ({exc})"
            ) from None
        return PostgresStore(url, **kwargs)
    raise StoreError(
        f"unsupported --database-url {url.split(':', 1)[0]!r}: use sqlite:///path or postgresql://..."
    )


__all__ = ["DailyRow", "Record", "Snapshot", "Store", "StoreError", "UserRow", "WriteResult", "open_store"]
