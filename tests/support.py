"""Shared helpers for tests that need real external components."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def in_ci() -> bool:
    """Return True when running under CI, where missing components must fail."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_binary(*names: str) -> str:
    """Return the path of the first binary found; skip loudly, or fail under CI."""
    for name in names:
        path = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if path:
            return path
    message = (
        f"REAL COMPONENT MISSING: none of {names!r} is installed. "
        "Run `make test` as root on Debian to install it."
    )
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")


@contextmanager
def tmpfs(target: Path, size: str) -> Iterator[Path]:
    """Mount a real tmpfs of `size` at target for a storage-fault test (root; skip loudly, fail under CI)."""
    target.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True, text=True
    )
    if result.returncode != 0:
        message = f"REAL FAULT UNAVAILABLE: cannot mount a tmpfs here ({result.stderr.strip()}); run as root"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
