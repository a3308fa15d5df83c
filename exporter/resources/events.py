"""POST /v1/events: one event, or a batch, in the client's exact bytes."""

from __future__ import annotations

import falcon

from exporter.ingest import Ingestor
from exporter.wire import check_content_type, parse_json, read_body, split_batch

OK_BODY = b'{"status": "ok"}'  # what the reference server answers; the same bytes every time


class EventsResource:
    """Accepts events; replies {"status": "ok"} to one event and per-item results to a batch."""

    def __init__(self, ingestor: Ingestor, max_body_bytes: int, max_batch: int) -> None:
        self.ingestor = ingestor
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Decode, validate and commit; 2xx only once the events are durable."""
        arrivals = self.ingestor.store.arrivals
        if arrivals is not None:
            arrivals.announce()  # group commit may wait a moment for this request's records
        try:
            check_content_type(req.content_type)
            body = read_body(
                req.bounded_stream,
                req.content_length,
                req.get_header("Content-Encoding"),
                self.max_body_bytes,
            )
            items, is_batch = split_batch(parse_json(body), self.max_batch)
            record = None if is_batch else self.ingestor.prepare_one(items[0])
            prepared = self.ingestor.prepare_batch(items) if is_batch else None
        finally:
            if arrivals is not None:
                arrivals.withdraw()
        if record is not None:
            self.ingestor.commit_one(record)
            resp.content_type = falcon.MEDIA_JSON
            resp.data = OK_BODY
            return
        assert prepared is not None
        outcome = self.ingestor.commit_batch(prepared)
        resp.media = outcome.to_dict()
        if outcome.accepted == 0 and outcome.duplicates == 0:
            resp.status = falcon.HTTP_400
            resp.media = {
                "title": "Invalid batch",
                "description": "no event in the batch is valid; see rejected[] for each reason",
                "reason": "invalid_batch",
                **outcome.to_dict(),
            }
