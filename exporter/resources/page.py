"""GET /: the HTML dashboard, rendered on the server from the aggregates."""

from __future__ import annotations

from collections.abc import Callable

import falcon

from exporter.page import load_assets, render_page
from exporter.store import Store


class PageResource:
    """Serves the dashboard page; its CSS and JS are read from the package once, here."""

    def __init__(
        self, store: Store, latest_version: str, grafana_url: str, clock: Callable[[], float]
    ) -> None:
        self.store = store
        self.latest_version = latest_version
        self.grafana_url = grafana_url
        self.clock = clock
        self.assets = load_assets()
        self.csp = self.assets.content_security_policy()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Render the page from one snapshot and the daily rollups."""
        now = self.clock()
        snap = self.store.snapshot(now)
        daily = self.store.daily(30, now)
        resp.content_type = falcon.MEDIA_HTML
        resp.cache_control = ["no-store"]
        resp.set_header("Content-Security-Policy", self.csp)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "no-referrer")
        resp.text = render_page(
            snap,
            daily,
            self.latest_version,
            self.grafana_url,
            now,
            assets=self.assets,
            base_url=req.prefix,
        )
