"""GET /: the HTML dashboard, rendered on the server from the aggregates."""

from __future__ import annotations

from collections.abc import Callable

import falcon

from exporter.aggregates import Folding
from exporter.page import Page
from exporter.store import Store


class PageResource:
    """Serves the dashboard page; its templates, CSS and JS are loaded once, here."""

    def __init__(
        self,
        store: Store,
        folding: Folding,
        grafana_url: str,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.folding = folding
        self.grafana_url = grafana_url
        self.clock = clock
        self.page = Page()
        self.csp = self.page.assets.content_security_policy()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Render the page from one snapshot and the daily rollups."""
        now = self.clock()
        view = self.folding.read(self.store, now)
        daily = self.store.daily(30, now)
        resp.content_type = falcon.MEDIA_HTML
        resp.cache_control = ["no-store"]
        resp.set_header("Content-Security-Policy", self.csp)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "no-referrer")
        # forwarded_prefix: behind the TLS front the client must be told the https address, not ours.
        resp.text = self.page.render(view, daily, self.grafana_url, base_url=req.forwarded_prefix)
