"""Fixtures chained as config -> store -> app -> client, each test with its own registry, store and clock."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
from hypothesis import settings
from prometheus_client import CollectorRegistry

from exporter.app import create_app
from exporter.config import Config
from exporter.store.sqlite import SQLiteStore

# `make mutation` runs the tests once per mutant: a smaller example budget keeps that to minutes.
settings.register_profile("mutation", max_examples=20)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])

NOW = 1_795_860_000.0  # 2026-11-28T09:20:00Z, a fixed "now" for deterministic windows


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        """Return the current fake time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at a fixed instant."""
    return FakeClock()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Settings pointing at a temporary data dir."""
    return Config(data_dir=str(tmp_path / "data"), user_id_key="test-key-0123456789abcdef")


@pytest.fixture
def store_factory(tmp_path: Path, clock: FakeClock) -> Iterator:
    """Open SQLite stores in the temp dir; every store opened is closed at the end."""
    opened: list[SQLiteStore] = []

    def make(name: str = "telemetry.db", **kwargs: object) -> SQLiteStore:
        kwargs.setdefault("clock", clock)
        store = SQLiteStore(tmp_path / name, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(store_factory) -> SQLiteStore:
    """A fresh SQLite store."""
    return store_factory()


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh Prometheus registry."""
    return CollectorRegistry()


@pytest.fixture
def app(config: Config, store: SQLiteStore, registry: CollectorRegistry, clock: FakeClock) -> falcon.App:
    """The app wired to the temp store, registry and fake clock."""
    return create_app(config, store=store, registry=registry, clock=clock)


@pytest.fixture
def client(app: falcon.App) -> falcon.testing.TestClient:
    """A Falcon test client for the app."""
    return falcon.testing.TestClient(app)


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL cluster for the session (skips loudly, or fails under CI, without it)."""
    from pgcluster import PgCluster

    base = Path(tempfile.mkdtemp(prefix="flakedrop-pg-"))
    os.chmod(base, 0o755)  # the postgres user must reach it; pytest's own temp dirs are private to root
    cluster = PgCluster(base)
    yield cluster
    cluster.destroy()
