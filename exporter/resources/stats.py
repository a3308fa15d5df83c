"""GET /stats: the reference keys plus ours, computed from the store's aggregates."""

from __future__ import annotations

from collections.abc import Callable

import falcon

from exporter.aggregates import Folding
from exporter.stats import read_stats
from exporter.store import Store


class StatsResource:
    """Serves /stats as JSON."""

    def __init__(
        self,
        store: Store,
        folding: Folding,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.folding = folding
        self.clock = clock

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return the current stats, never cached."""
        now = self.clock()
        resp.media = read_stats(self.store, self.folding, now)
        resp.cache_control = ["no-store"]
