"""GET /openapi.json: the API contract shipped in the package (exporter/openapi.json)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import falcon

from exporter import __version__


def load_spec() -> dict[str, Any]:
    """Return the packaged OpenAPI document, its info.version set to this build's version."""
    spec = json.loads(resources.files("exporter").joinpath("openapi.json").read_text(encoding="utf-8"))
    spec["info"]["version"] = __version__
    return spec


class OpenAPIResource:
    """Serves the OpenAPI document, rendered once at start-up."""

    def __init__(self) -> None:
        self.body = json.dumps(load_spec(), separators=(",", ":")).encode("utf-8")

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Return the document; it changes only with a new build."""
        resp.content_type = falcon.MEDIA_JSON
        resp.cache_control = ["public", "max-age=3600"]
        resp.data = self.body
