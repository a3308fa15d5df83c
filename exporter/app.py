"""The application factory: builds the store, metrics, ingest pipeline and routes from a Config."""

from __future__ import annotations

import base64
import binascii
import calendar
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import falcon
from prometheus_client import CollectorRegistry

from exporter.aggregates import Folding
from exporter.config import Config
from exporter.errors import RateLimited, StoreError, TelemetryError
from exporter.ingest import Ingestor, UserHasher
from exporter.metrics import Metrics, StoreCollector
from exporter.ratelimit import Network, RateLimiter, client_ip, parse_networks
from exporter.resources.events import EventsResource
from exporter.resources.health import HealthResource, ReadyResource
from exporter.resources.metrics import MetricsResource
from exporter.resources.openapi import OpenAPIResource
from exporter.resources.page import PageResource
from exporter.resources.stats import StatsResource
from exporter.resources.version import LatestVersionResource
from exporter.store import Store
from exporter.userkey import load_or_create

log = logging.getLogger(__name__)

ROUTES = (
    "/v1/events",
    "/v1/version/latest",
    "/stats",
    "/metrics",
    "/",
    "/healthz",
    "/readyz",
    "/openapi.json",
)
PROTECTED = frozenset({"/", "/stats", "/metrics"})


def load_user_key(config: Config) -> bytes:
    """Return the HMAC key for user ids: the setting, else a file generated once in the data dir."""
    if config.user_id_key:
        if len(config.user_id_key) < 16:
            raise StoreError("--user-id-key must be at least 16 characters")
        return config.user_id_key.encode("utf-8")
    return load_or_create(config.data_dir)


def release_timestamp(date: str) -> float | None:
    """Parse the YYYY-MM-DD release date into a Unix time, or None when unset or malformed."""
    try:
        return float(calendar.timegm(time.strptime(date, "%Y-%m-%d")))
    except ValueError:
        return None


class AuthMiddleware:
    """Guards the read endpoints with the read token (Bearer, or Basic with the token as password)."""

    def __init__(self, token: str) -> None:
        self.token = token.encode("utf-8")

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict
    ) -> None:
        """Reject a protected route without the token, with a Basic challenge browsers understand."""
        if not self.token or req.uri_template not in PROTECTED:
            return
        if not self._authorized(req.get_header("Authorization") or ""):
            raise falcon.HTTPUnauthorized(
                title="Authentication required",
                description="send the read token as a Bearer token, or as the password of HTTP Basic auth",
                challenges=['Basic realm="FlakeDrop Telemetry", charset="UTF-8"'],
            )

    def _authorized(self, header: str) -> bool:
        """Check a Bearer or Basic Authorization header in constant time."""
        scheme, _, value = header.partition(" ")
        candidate = b""
        if scheme.lower() == "bearer":
            candidate = value.strip().encode("utf-8")
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            candidate = decoded.partition(b":")[2]
        return hmac.compare_digest(candidate, self.token)


class RateLimitMiddleware:
    """Answers 429 with Retry-After when one client IP posts events faster than --rate-limit."""

    def __init__(self, limiter: RateLimiter, trusted: tuple[Network, ...], metrics: Metrics) -> None:
        self.limiter = limiter
        self.trusted = trusted
        self.metrics = metrics

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict
    ) -> None:
        """Take a token for the request's client, or reject it."""
        if req.uri_template != "/v1/events" or req.method != "POST":
            return
        ip = client_ip(req.remote_addr or "", req.get_header("X-Forwarded-For"), self.trusted)
        wait = self.limiter.allow(ip)
        if wait:
            self.metrics.count_rejection("rate_limited")
            raise RateLimited(
                f"too many requests from your address; retry in {RateLimiter.retry_after(wait)} s",
                retry_after=RateLimiter.retry_after(wait),
            )


class MetricsMiddleware:
    """Times every request and counts it by route, method and status code."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Remember when the request started."""
        req.context.started = time.perf_counter()

    def _instruments(self, route: str, method: str, code: int) -> tuple[Any, Any]:
        """Return the labelled latency and request children, resolving each label set once."""
        key = (route, method, code)
        found = self._children.get(key)
        if found is None:
            found = (
                self.metrics.latency.labels(route, method),
                self.metrics.requests.labels(route, method, str(code)),
            )
            self._children[key] = found
        return found

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, ok: bool
    ) -> None:
        """Observe latency and count the response."""
        route = req.uri_template if req.uri_template in ROUTES else "other"
        method = req.method if req.method in ("GET", "POST", "HEAD", "OPTIONS") else "other"
        elapsed = time.perf_counter() - getattr(req.context, "started", time.perf_counter())
        latency, requests = self._instruments(route, method, resp.status_code)
        latency.observe(elapsed)
        requests.inc()


@dataclass(frozen=True)
class Service:
    """The wired application and the instruments the server shares with it."""

    app: falcon.App
    metrics: Metrics


def create_app(
    config: Config,
    *,
    store: Store,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
) -> falcon.App:
    """Build the WSGI app on a store the caller opened, owns and closes."""
    return build_service(config, store=store, registry=registry, clock=clock).app


def build_service(
    config: Config,
    *,
    store: Store,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
) -> Service:
    """Wire metrics, the ingest pipeline, middleware and routes; raise StoreError on a key mismatch."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = Metrics(registry)
    store.observe_commits(metrics.observe_commit)
    hasher = UserHasher(load_user_key(config))
    stored = store.key_fingerprint(hasher.fingerprint())
    if stored != hasher.fingerprint():
        raise StoreError(
            "the user-id key differs from the one this store was filled with, so every user would be counted "
            "twice; restore the key file or --user-id-key used before (all replicas must share one key)"
        )
    metrics.store_ready.set_function(lambda: 1.0 if store.ready() else 0.0)
    folding = Folding(config.latest_version, config.retention_cohorts, config.retention_weeks)
    registry.register(
        StoreCollector(
            store,
            clock,
            folding,
            release_timestamp(config.latest_release_date),
            on_error=metrics.store_errors.labels("read").inc,
        )
    )
    ingestor = Ingestor(
        store,
        metrics,
        hasher,
        clock,
        max_body_bytes=config.max_body_bytes,
        max_batch=config.max_batch,
        arrivals=store.arrivals,
    )

    middleware: list[Any] = [MetricsMiddleware(metrics), AuthMiddleware(config.read_token)]
    if config.rate_limit > 0:
        limiter = RateLimiter(config.rate_limit, config.rate_burst, clock=clock)
        middleware.append(RateLimitMiddleware(limiter, parse_networks(config.trusted_proxies), metrics))
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.secure_cookies_by_default = True
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(TelemetryError, handle_telemetry_error)
    app.add_route("/v1/events", EventsResource(ingestor))
    app.add_route(
        "/v1/version/latest",
        LatestVersionResource(
            config.latest_version, config.latest_release_date, config.update_url, config.latest_critical
        ),
    )
    app.add_route("/stats", StatsResource(store, folding, clock))
    app.add_route("/metrics", MetricsResource(registry))
    app.add_route("/", PageResource(store, folding, config.grafana_url, clock))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(store))
    app.add_route("/openapi.json", OpenAPIResource())
    return Service(app, metrics)


def handle_telemetry_error(
    req: falcon.Request, resp: falcon.Response, exc: TelemetryError, params: dict
) -> None:
    """Map a domain error to its status and JSON body (whoever raised it has counted it)."""
    resp.status = exc.status
    resp.media = exc.to_dict()
    if exc.retry_after is not None:
        resp.retry_after = exc.retry_after


def handle_unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict) -> None:
    """Never leak a traceback; log it, and answer 500 (a bug: tests require this never happens)."""
    log.exception("unexpected error on %s %s", req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.media = {"title": "Internal error", "description": "the server failed; this is a bug"}
