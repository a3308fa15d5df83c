"""The user-id key file in the data dir: where it lives, how it is read, and how it is written."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from exporter.errors import StoreError

KEY_FILE = "user-id.key"  # in the data dir: hex of the HMAC key, mode 0600


def key_path(data_dir: str | Path) -> Path:
    """Return where the data dir keeps its user-id key."""
    return Path(data_dir) / KEY_FILE


def read_key(path: Path) -> bytes:
    """Return the key a key file holds; FileNotFoundError when there is none, StoreError when unreadable."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise StoreError(
            f"{path} does not hold a hex key; restore it or remove it (users will recount)"
        ) from None


def write_key(path: Path, key: bytes) -> None:
    """Create a key file (mode 0600) holding key; FileExistsError when one is already there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def load_or_create(data_dir: str | Path) -> bytes:
    """Return the data dir's key, generating and storing a random one the first time."""
    path = key_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        write_key(path, key)
    except FileExistsError:
        return read_key(path)
    return key
