"""GET /stats: the reference keys plus ours, computed from the store's aggregates."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import falcon

from exporter.aggregates import fold
from exporter.stats import STATS_DAYS, stats_document
from exporter.store import Store


class StatsResource:
    """Serves /stats as JSON."""

    def __init__(
        self,
        store: Store,
        latest_version: str,
        clock: Callable[[], float],
        bounds: Mapping[str, int] | None = None,
    ) -> None:
        self.store = store
        self.latest_version = latest_version
        self.clock = clock
        self.bounds = dict(bounds or {})  # fold()'s max_cohorts / max_weeks (the settings)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return the current stats, never cached."""
        now = self.clock()
        view = fold(self.store.snapshot(now), self.latest_version, now, **self.bounds)
        resp.media = stats_document(view, self.store.daily(STATS_DAYS, now))
        resp.cache_control = ["no-store"]
