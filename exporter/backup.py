"""Take a backup: a consistent SQLite copy (or a pg_dump archive), with its key and hash, written atomically.

A SQLite backup is one SQLite file: the store's tables, copied page by page with SQLite's online
backup API, plus a `backup_meta` table added to the copy. The copy is made inside one read
transaction of the live store, so it is the store as of one commit while ingest goes on (WAL lets
the writer continue); without that transaction every commit made by the server would restart the
copy. The `sha256` in `backup_meta` is the SHA-256 of the whole file with that value's own 64 hex
digits read as ASCII zeros (the IP-header checksum trick), so any flipped byte anywhere is caught.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from exporter import __version__
from exporter.errors import StoreError
from exporter.ingest import UserHasher
from exporter.store import sqlite_file
from exporter.store.base import SCHEMA_VERSION
from exporter.store.sqlite import APPLICATION_ID
from exporter.userkey import key_path, read_key

FORMAT_VERSION = 1
HASH_LEN = 64
PLACEHOLDER = b"0" * HASH_LEN
CHUNK = 1 << 20
Progress = Callable[[int, int], None]  # (pages copied, pages in all)


class BackupError(Exception):
    """A backup, verify or restore cannot go on; the message is one line that says what to do."""


@dataclass(frozen=True)
class KeyMaterial:
    """What a backup carries of the user-id key: the key itself (hex), or only its fingerprint."""

    key_hex: str | None
    fingerprint: str


def key_material(data_dir: str | Path, user_id_key: str) -> KeyMaterial:
    """Return the server's key: only the fingerprint of --user-id-key, else the data dir's key file."""
    if user_id_key:
        return KeyMaterial(None, UserHasher(user_id_key.encode("utf-8")).fingerprint())
    path = key_path(data_dir)
    try:
        key = read_key(path)
    except FileNotFoundError:
        raise BackupError(
            f"no user-id key at {path}; point --data-dir at the server's data dir, or pass its --user-id-key"
        ) from None
    except (OSError, StoreError) as exc:
        raise BackupError(f"cannot read the user-id key {path}: {exc}") from None
    return KeyMaterial(key.hex(), UserHasher(key).fingerprint())


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in a directory durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged(final: Path) -> Iterator[Path]:
    """Yield FINAL.tmp-<pid> to write; on success fsync it, rename it to final and fsync the dir.

    On any error the temporary file goes and the error propagates: final is never a partial file.
    """
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        for suffix in ("-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                Path(str(tmp) + suffix).unlink()
        raise


def find_all(path: Path, needle: bytes) -> list[int]:
    """Return every offset of needle in the file, reading it in chunks."""
    found: list[int] = []
    overlap = len(needle) - 1
    with open(path, "rb") as handle:
        base, tail = 0, b""
        while chunk := handle.read(CHUNK):
            data = tail + chunk
            start = data.find(needle)
            while start != -1:
                found.append(base - len(tail) + start)
                start = data.find(needle, start + 1)
            tail = data[-overlap:] if overlap else b""
            base += len(chunk)
    return found


def file_hash(path: Path, stored_at: int) -> str:
    """Return the SHA-256 of the file with the 64 bytes at stored_at read as ASCII zeros."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        pos = 0
        while chunk := handle.read(CHUNK):
            lo, hi = stored_at - pos, stored_at + HASH_LEN - pos
            if hi > 0 and lo < len(chunk):
                buf = bytearray(chunk)
                a, b = max(lo, 0), min(hi, len(chunk))
                buf[a:b] = PLACEHOLDER[a - lo : b - lo]
                chunk = bytes(buf)
            digest.update(chunk)
            pos += len(chunk)
    return digest.hexdigest()


def _seal(path: Path) -> str:
    """Replace the placeholder hash in the finished file with the file's hash; return it."""
    offsets = find_all(path, PLACEHOLDER)
    if len(offsets) != 1:
        raise BackupError(f"cannot place the hash in {path}: the placeholder occurs {len(offsets)} times")
    value = file_hash(path, offsets[0])
    with open(path, "r+b") as handle:
        handle.seek(offsets[0])
        handle.write(value.encode("ascii"))
    return value


def require_store(path: Path) -> None:
    """Raise a clear error when there is no store file at path."""
    if not path.is_file() or path.stat().st_size == 0:
        raise BackupError(f"no store at {path}; point --data-dir or --database-url at the server's store")


def open_source(path: Path) -> sqlite3.Connection:
    """Open the live store read-only, refusing a missing or foreign file."""
    require_store(path)
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA query_only = 1")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise BackupError(f"{path} is not a readable SQLite store: {exc}") from None
    if app_id != APPLICATION_ID or not 1 <= version <= SCHEMA_VERSION:
        conn.close()
        raise BackupError(
            f"{path} is not a FlakeDrop telemetry store this server knows (application_id {app_id:#x}, "
            f"schema {version})"
        )
    return conn


def backup_sqlite(
    source: Path,
    dest: Path,
    key: KeyMaterial,
    *,
    step_pages: int = 1024,
    pause: float = 0.0,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.time,
) -> str:
    """Copy the live store at source into dest as one consistent, hashed backup file; return its hash."""
    src = open_source(source)
    try:
        with staged(dest) as tmp:
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                os.chmod(tmp, 0o600)  # it holds the user-id key
                src.execute("BEGIN")  # one read transaction: the copy is the store as of one commit
                check_fingerprint(src, key)  # before copying every page, not after

                def step(status: int, remaining: int, total: int) -> None:
                    if progress:
                        progress(total - remaining, total)
                    if pause:
                        time.sleep(pause)

                src.backup(dst, pages=max(step_pages, 1), progress=step)
                src.execute("COMMIT")
                _add_meta(dst, key, clock())
            finally:
                dst.close()
            value = _seal(tmp)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot write {dest}: {exc}") from None
    except OSError as exc:
        raise BackupError(f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        src.close()
    return value


def check_fingerprint(src: sqlite3.Connection, key: KeyMaterial) -> None:
    """Refuse a key other than the one the store was filled with (its restore would count users twice)."""
    stored = src.execute("SELECT value FROM meta WHERE key = 'key_fingerprint'").fetchone()
    if stored and stored[0] != key.fingerprint:
        raise BackupError(
            "the user-id key given does not match the one this store was filled with; a restore would count "
            "every user twice (use the server's own --data-dir or --user-id-key)"
        )


def _add_meta(dst: sqlite3.Connection, key: KeyMaterial, now: float) -> None:
    """Make the copy self-contained (rollback journal) and add the backup_meta table to it."""
    dst.execute("PRAGMA journal_mode = DELETE")
    rows = {
        "format_version": str(FORMAT_VERSION),
        "schema_version": str(dst.execute("PRAGMA user_version").fetchone()[0]),
        "server_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "key_fingerprint": key.fingerprint,
        "sha256": PLACEHOLDER.decode("ascii"),
    }
    if key.key_hex:
        rows["user_id_key"] = key.key_hex
    dst.execute("BEGIN")
    dst.execute("CREATE TABLE backup_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    dst.executemany("INSERT INTO backup_meta (key, value) VALUES (?, ?)", sorted(rows.items()))
    dst.execute("COMMIT")


def find_pg_dump() -> str | None:
    """Return pg_dump from PATH, else the newest one under /usr/lib/postgresql, else None."""
    found = shutil.which("pg_dump")
    if found:
        return found
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), key=lambda p: int(p.split("/")[4] or 0)
    )
    return candidates[-1] if candidates else None


def backup_postgres(url: str, dest: Path, find: Callable[[], str | None] = find_pg_dump) -> None:
    """Dump a PostgreSQL store with pg_dump --format=custom into dest, atomically."""
    pg_dump = find()
    if pg_dump is None:
        raise BackupError(
            f"pg_dump is not installed; install the PostgreSQL client and run: "
            f'pg_dump --format=custom --file={dest} --dbname="$FLAKEDROP_TELEMETRY_DATABASE_URL"'
        )
    try:
        with staged(dest) as tmp:
            result = subprocess.run(
                [pg_dump, "--format=custom", f"--file={tmp}", f"--dbname={url}"],
                capture_output=True,
                text=True,
                timeout=24 * 3600,
            )
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or ["no message"])[-1]
                raise BackupError(f"pg_dump failed (exit {result.returncode}): {last}")
            os.chmod(tmp, 0o600)
    except OSError as exc:
        raise BackupError(f"cannot write {dest}: {exc.strerror or exc}") from None


def take_backup(
    store_url: str,
    dest: Path,
    key: KeyMaterial | None,
    *,
    progress: Progress | None = None,
    step_pages: int = 1024,
    pause: float = 0.0,
    clock: Callable[[], float] = time.time,
) -> str:
    """Back up the store at store_url into dest; return the hash ('' for a pg_dump archive)."""
    path = sqlite_file(store_url)
    if path is None:
        if not store_url.startswith(("postgresql://", "postgres://")):
            raise BackupError(f"cannot back up a store URL of this kind: {store_url.split('://')[0]}://")
        backup_postgres(store_url, dest)
        return ""
    if key is None:
        raise BackupError("a SQLite backup needs the user-id key or its fingerprint")
    return backup_sqlite(path, dest, key, step_pages=step_pages, pause=pause, progress=progress, clock=clock)


def progress_bar(stream: IO[str]) -> Progress | None:
    """Return a progress callback drawing a bar on stream when it is a terminal, else None."""
    if not stream.isatty():
        return None

    def draw(done: int, total: int) -> None:
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        stream.write(f"\rbackup [{bar:<30}] {share:4.0%} {done}/{total} pages")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return draw
