"""GET /healthz (liveness) and GET /readyz (the store can take writes)."""

from __future__ import annotations

import falcon

from exporter.store import Store


class HealthResource:
    """Liveness: the process answers."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Always ok while the process serves requests."""
        resp.media = {"status": "ok"}


class ReadyResource:
    """Readiness: the store is reachable and committing."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer 200 when ready, 503 with Retry-After when not."""
        if self.store.ready():
            resp.media = {"status": "ready"}
            return
        resp.status = falcon.HTTP_503
        resp.retry_after = 5
        resp.media = {"status": "not ready", "description": "the store cannot take writes right now"}
