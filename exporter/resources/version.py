"""GET /v1/version/latest: the client's update check."""

from __future__ import annotations

import falcon


class LatestVersionResource:
    """Answers the update check from the release settings."""

    def __init__(self, latest_version: str, release_date: str, update_url: str, critical: bool) -> None:
        self.body = {
            "latest_version": latest_version,
            "release_date": release_date,
            "update_url": update_url,
            "critical": critical,
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return the latest release; clients may cache it for an hour."""
        resp.media = self.body
        resp.cache_control = ["public", "max-age=3600"]
