"""Domain errors, each carrying a fixed rejection reason, and their single mapping to HTTP."""

from __future__ import annotations

from typing import Any

# The fixed set of reasons for flakedrop_events_rejected_total{reason}.
REJECT_REASONS = (
    "invalid_json",
    "unsupported_media_type",
    "body_too_large",
    "bad_encoding",
    "missing_field",
    "invalid_field",
    "unknown_type",
    "batch_too_large",
    "rate_limited",
    "store_unavailable",
    "headers_too_large",
    "bad_http",
)


class TelemetryError(Exception):
    """Base of every error the API reports to a client."""

    status = 400
    reason = "invalid_json"
    title = "Bad request"

    def __init__(self, description: str, *, field: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.field = field
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON body sent to the client."""
        body: dict[str, Any] = {"title": self.title, "description": self.description, "reason": self.reason}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidEvent(TelemetryError):
    """One event is missing a field, has an ill-typed one, or has an unknown type."""

    title = "Invalid event"

    def __init__(self, reason: str, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", field=field)
        self.reason = reason


class InvalidJSON(TelemetryError):
    """The body is not acceptable JSON."""

    title = "Invalid JSON"
    reason = "invalid_json"


class BadEncoding(TelemetryError):
    """The body's bytes or content encoding cannot be decoded."""

    title = "Bad encoding"
    reason = "bad_encoding"


class UnsupportedEncoding(TelemetryError):
    """The Content-Encoding is not one we decode."""

    status = 415
    title = "Unsupported content encoding"
    reason = "bad_encoding"


class UnsupportedMediaType(TelemetryError):
    """The Content-Type is not JSON."""

    status = 415
    title = "Unsupported media type"
    reason = "unsupported_media_type"


class BodyTooLarge(TelemetryError):
    """The body, after decoding, is over the limit."""

    status = 413
    title = "Payload too large"
    reason = "body_too_large"


class BatchTooLarge(TelemetryError):
    """A batch holds more events than allowed."""

    status = 413
    title = "Batch too large"
    reason = "batch_too_large"


class RateLimited(TelemetryError):
    """The client sent more than its share."""

    status = 429
    title = "Too many requests"
    reason = "rate_limited"


class StoreUnavailable(TelemetryError):
    """The store cannot commit right now; the client may retry later."""

    status = 503
    title = "Store unavailable"
    reason = "store_unavailable"

    def __init__(
        self, description: str = "the event store is unavailable; retry later", retry_after: int = 5
    ):
        super().__init__(description, retry_after=retry_after)


class StoreError(Exception):
    """A store could not be opened or used; raised at start-up with a message for the operator."""
