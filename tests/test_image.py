"""Checks of the Dockerfile and .dockerignore (no Docker daemon needed)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# The image's CMD: no --port, so $PORT (Heroku, Render, Fly) or FLAKEDROP_TELEMETRY_PORT applies.
SERVE_IN_IMAGE = ["serve", "--host", "0.0.0.0", "--data-dir", "/data"]
# Files the image build copies; .dockerignore must not hide them.
BUILD_INPUTS = ["pyproject.toml", "setup.cfg", "README.md", "exporter"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile as (INSTRUCTION, arguments) pairs, continuation lines joined."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    pairs = []
    for text in logical:
        instruction, _, arguments = text.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def exec_form(arguments: str) -> list[str]:
    """Return the JSON (exec) form of a Dockerfile instruction's arguments."""
    value = json.loads(arguments)
    assert isinstance(value, list), arguments
    return value


def test_dockerfile() -> None:
    """Pinned slim Python base, non-root user 10001, /data volume, port 8080, health check, $PORT honoured."""
    by_name: dict[str, list[str]] = {}
    for instruction, arguments in dockerfile_instructions():
        by_name.setdefault(instruction, []).append(arguments)
    bases = [arguments.split()[0] for arguments in by_name["FROM"]]
    assert all(re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", base) for base in bases), bases
    assert any("useradd" in run and "--uid 10001" in run for run in by_name["RUN"])
    assert by_name["USER"][-1].split(":")[0] == "10001"
    assert "/data" in by_name["VOLUME"][-1]
    assert "8080" in by_name["EXPOSE"][-1].split()
    healthcheck = by_name["HEALTHCHECK"][-1]
    assert "urllib" in healthcheck and "/healthz" in healthcheck and "PORT" in healthcheck
    assert exec_form(by_name["ENTRYPOINT"][-1]) == ["flakedrop-telemetry"]
    assert exec_form(by_name["CMD"][-1]) == SERVE_IN_IMAGE


def test_dockerfile_copies_existing_files() -> None:
    """Every file the build stage copies from the context exists and is not excluded by .dockerignore."""
    ignored = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    ignored = [line for line in ignored if line and not line.startswith("#")]
    for instruction, arguments in dockerfile_instructions():
        if instruction != "COPY" or arguments.startswith("--from"):
            continue
        *sources, _ = shlex.split(arguments)
        for source in sources:
            assert source.rstrip("/") in BUILD_INPUTS, (
                f"COPY {source}: add it to BUILD_INPUTS and check .dockerignore"
            )
    for name in BUILD_INPUTS:
        assert name not in ignored, f".dockerignore hides {name}"
        assert (ROOT / name).exists(), f"{name} is copied into the image but missing"
    assert {".git", ".venv", "data", ".env", "secrets"} <= set(ignored), "secrets must never enter the image"
