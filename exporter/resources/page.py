"""GET /: the HTML dashboard, rendered on the server from the aggregates."""

from __future__ import annotations

from collections.abc import Callable

import falcon

from exporter.page import render_page
from exporter.store import Store


class PageResource:
    """Serves the dashboard page."""

    def __init__(
        self, store: Store, latest_version: str, grafana_url: str, clock: Callable[[], float]
    ) -> None:
        self.store = store
        self.latest_version = latest_version
        self.grafana_url = grafana_url
        self.clock = clock

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Render the page from one snapshot and the daily rollups."""
        now = self.clock()
        snap = self.store.snapshot(now)
        daily = self.store.daily(30, now)
        resp.content_type = falcon.MEDIA_HTML
        resp.cache_control = ["no-store"]
        resp.text = render_page(snap, daily, self.latest_version, self.grafana_url, now)
