"""GET /stats: the reference keys plus ours, computed from the store's aggregates."""

from __future__ import annotations

from collections.abc import Callable

import falcon

from exporter.aggregates import fold
from exporter.stats import stats_document
from exporter.store import Store


class StatsResource:
    """Serves /stats as JSON."""

    def __init__(self, store: Store, latest_version: str, clock: Callable[[], float]) -> None:
        self.store = store
        self.latest_version = latest_version
        self.clock = clock

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return the current stats, never cached."""
        now = self.clock()
        resp.media = stats_document(fold(self.store.snapshot(now), self.latest_version, now))
        resp.cache_control = ["no-store"]
