"""POST /v1/events: one event, or a batch, in the client's exact bytes."""

from __future__ import annotations

import falcon

from exporter.ingest import Ingestor, Upload


class EventsResource:
    """Accepts events; replies {"status": "ok"} to one event and per-item results to a batch."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Hand the request to the ingestor and send its reply; errors go to the app's one handler."""
        reply = self.ingestor.ingest(
            Upload(
                req.content_type, req.content_length, req.get_header("Content-Encoding"), req.bounded_stream
            )
        )
        resp.status = reply.status
        resp.content_type = falcon.MEDIA_JSON
        resp.data = reply.data
