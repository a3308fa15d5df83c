"""The floor: a bare Falcon+waitress endpoint that only parses JSON (what any Python server here pays)."""

from __future__ import annotations

import json
import sys

import falcon
from waitress import serve


class Floor:
    """Parses the body as JSON and answers like the reference server."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Parse and acknowledge."""
        json.loads(req.bounded_stream.read())
        resp.media = {"status": "ok"}


def main() -> None:
    """Serve the floor on the port given as the first argument."""
    app = falcon.App()
    app.add_route("/v1/events", Floor())
    serve(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        threads=int(sys.argv[2]) if len(sys.argv) > 2 else 4,
        _quiet=True,
    )


if __name__ == "__main__":
    main()
