"""GET /metrics: prometheus_client's own exposition (OpenMetrics negotiation and gzip included)."""

from __future__ import annotations

from typing import Any

import falcon
from prometheus_client import CollectorRegistry, make_wsgi_app

from exporter.metrics import WithoutCreated


class MetricsResource:
    """Delegates to prometheus_client's WSGI app, so the text format is never hand-written."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.wsgi_app = make_wsgi_app(WithoutCreated(registry))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Render the registry (without `_created` samples) in the format and encoding the scraper asks for."""
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        environ = dict(req.env)
        environ["PATH_INFO"] = "/metrics"
        body = b"".join(self.wsgi_app(environ, start_response))
        resp.status = captured["status"]
        for name, value in captured["headers"]:
            resp.set_header(name, value)
        resp.data = body
