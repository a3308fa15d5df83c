"""The OpenAPI document: shipped, served, in step with the code, and every real reply conforms to it."""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import falcon.testing
import jsonschema
import pytest
from procs import Server, http
from prometheus_client import CollectorRegistry
from wire_samples import CONFIG_CREATED, DEPLOYMENT, HEADERS, HEARTBEAT, USER

from exporter import __version__
from exporter.aggregates import fold
from exporter.app import PROTECTED, ROUTES, create_app
from exporter.config import Config
from exporter.errors import REJECT_REASONS, StoreUnavailable
from exporter.normalize import COLLECTOR_TYPES, SHIPPED_TYPES
from exporter.stats import stats_document
from exporter.store import Snapshot

TOKEN = "read-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent


@cache
def spec() -> dict[str, Any]:
    """Return the packaged OpenAPI document."""
    return json.loads(resources.files("exporter").joinpath("openapi.json").read_text(encoding="utf-8"))


def _pointer(*parts: str) -> str:
    """Build a JSON pointer fragment from raw path parts."""
    return "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local $ref in the document (responses may be shared components)."""
    while "$ref" in node:
        target: Any = spec()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def ecma_regex(pattern: str) -> re.Pattern[str]:
    """Compile a schema pattern with ECMA-262 meaning: `$` is the very end and `\\d` is ASCII."""
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern, re.ASCII)


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    """The `pattern` keyword with ECMA-262 semantics (Python's `$` also matches before a final newline)."""
    if isinstance(instance, str) and not ecma_regex(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})


def validate(instance: Any, ref: str) -> None:
    """Validate an instance against the schema at a JSON pointer of the document (formats checked)."""
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": ref, **spec()}
    EcmaValidator(root, format_checker=jsonschema.FormatChecker()).validate(instance)


def assert_documented(method: str, path: str, status: int, headers: Mapping[str, str], body: bytes) -> Any:
    """Assert a reply's status, media type, required headers and JSON body are as documented; return the JSON."""
    operation = spec()["paths"][path][method.lower()]
    assert str(status) in operation["responses"], (
        f"{method} {path} answered undocumented {status}: {body[:300]!r}"
    )
    response = _resolve(operation["responses"][str(status)])
    lowered = {name.lower(): value for name, value in headers.items()}
    for name, header in response.get("headers", {}).items():
        if header.get("required"):
            assert name.lower() in lowered, f"{method} {path} {status} lacks the {name} header"
    media = lowered.get("content-type", "").split(";", 1)[0].strip().lower()
    assert media in response["content"], f"{method} {path} {status} sent undocumented {media!r}"
    if media != "application/json":
        return None
    document = json.loads(body)
    raw = operation["responses"][str(status)]
    base = raw["$ref"] if "$ref" in raw else _pointer("paths", path, method.lower(), "responses", str(status))
    validate(document, base + "/" + _pointer("content", media, "schema").removeprefix("#/"))
    return document


class DownStore:
    """A store that cannot commit (delegating everything else), for the documented 503 replies."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        """Delegate to the real store."""
        return getattr(self.inner, name)

    def write(self, records: Any) -> Any:
        """Refuse every write."""
        raise StoreUnavailable()

    def ready(self) -> bool:
        """Report not ready."""
        return False


def test_spec_is_shipped_in_the_package_and_served(client: falcon.testing.TestClient) -> None:
    assert "openapi.json" in (ROOT / "setup.cfg").read_text()
    resp = client.simulate_get("/openapi.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    served = resp.json
    assert served["info"]["version"] == __version__
    assert {**served, "info": spec()["info"]} == spec()
    assert_documented("GET", "/openapi.json", 200, resp.headers, resp.content)


def test_spec_is_valid_openapi_31_and_every_schema_is_valid() -> None:
    import schemathesis

    document = spec()
    assert document["openapi"].startswith("3.1.")
    loaded = schemathesis.openapi.from_dict(document)
    operations = {(op.method.upper(), op.path) for op in (r.ok() for r in loaded.get_all_operations())}
    assert operations == {("POST", "/v1/events")} | {("GET", path) for path in ROUTES if path != "/v1/events"}
    for name, schema in document["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema({"$defs": {name: schema}})


def test_every_route_is_documented_and_the_read_token_guards_exactly_the_protected_ones() -> None:
    paths = spec()["paths"]
    assert set(paths) == set(ROUTES)
    schemes = spec()["components"]["securitySchemes"]
    assert schemes["readBearer"] == {**schemes["readBearer"], "type": "http", "scheme": "bearer"}
    assert schemes["readBasic"] == {**schemes["readBasic"], "type": "http", "scheme": "basic"}
    for path, item in paths.items():
        for operation in item.values():
            security = operation.get("security", [])
            if path in PROTECTED:
                assert security == [{"readBearer": []}, {"readBasic": []}], path
                assert "401" in operation["responses"], path
            else:
                assert not security, path


def test_enumerations_and_limits_match_the_code() -> None:
    schemas = spec()["components"]["schemas"]
    deployment = schemas["DeploymentEvent"]["anyOf"][0]["properties"]["type"]["const"]
    others = set(schemas["OtherEvent"]["anyOf"][0]["properties"]["type"]["enum"])
    assert {deployment} | others == SHIPPED_TYPES | COLLECTOR_TYPES
    assert schemas["Error"]["properties"]["reason"]["enum"] == [*REJECT_REASONS, "invalid_batch"]
    assert schemas["EventArray"]["maxItems"] == Config().max_batch
    stats = stats_document(fold(Snapshot({}, {}, {}), "v1.3.5", 0.0), [])
    assert set(schemas["Stats"]["required"]) == set(stats) == set(schemas["Stats"]["properties"])
    validate(stats, "#/components/schemas/Stats")
    statuses = set(spec()["paths"]["/v1/events"]["post"]["responses"])
    assert statuses == {"200", "400", "413", "415", "429", "503"}
    assert set(spec()["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}
    metrics_media = set(spec()["paths"]["/metrics"]["get"]["responses"]["200"]["content"])
    assert metrics_media == {"text/plain", "application/openmetrics-text"}
    assert set(spec()["paths"]["/"]["get"]["responses"]["200"]["content"]) == {"text/html"}


@pytest.mark.parametrize(
    ("sample", "schema"),
    [
        (HEARTBEAT, "ShippedHeartbeat"),
        (CONFIG_CREATED, "ShippedConfigCreated"),
        (DEPLOYMENT, "ShippedDeployment"),
    ],
    ids=["heartbeat", "config_created", "deployment"],
)
def test_the_shipped_client_bytes_match_their_schemas(sample: bytes, schema: str) -> None:
    document = json.loads(sample)
    validate(document, f"#/components/schemas/{schema}")
    validate(document, "#/components/schemas/Event")
    validate(document, "#/components/schemas/EventsRequest")


def test_request_examples_are_valid_and_accepted(client: falcon.testing.TestClient) -> None:
    content = spec()["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert set(content["examples"]) >= {
        "heartbeat",
        "config_created",
        "deployment",
        "flat",
        "array",
        "events",
    }
    for name, example in content["examples"].items():
        validate(example["value"], "#/components/schemas/EventsRequest")
        resp = client.simulate_post("/v1/events", body=json.dumps(example["value"]), headers=HEADERS)
        assert resp.status_code == 200, name
        assert_documented("POST", "/v1/events", 200, resp.headers, resp.content)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "deployment", "user_id": USER, "version": "1.0.0"},
        {"type": "deployment", "user_id": USER, "version": "1.0.0", "success": "yes"},
        {"type": "heartbeat", "user_id": "xyz", "version": "1.0.0"},
        {"type": "heartbeat", "user_id": USER + "\n", "version": "1.0.0"},
        {"type": "heartbeat", "user_id": USER, "version": None},
        {"type": "nope", "user_id": USER, "version": "1.0.0"},
        {"type": "heartbeat", "user_id": USER, "version": "1", "timestamp": "2026-02-30T00:00:00Z"},
        {
            "type": "heartbeat",
            "user_id": USER,
            "version": "1",
            "timestamp": "2026-01-01T00:00:00.1234567891Z",
        },
        {"type": "heartbeat", "user_id": USER, "version": "1", "id": ""},
        {"type": "heartbeat", "data": {"data": {"user_id": USER, "version": "1", "id": "a b"}}},
        {"type": "heartbeat", "data": 5},
        [],
        {"events": []},
    ],
)
def test_what_the_schema_rejects_the_server_rejects(client: falcon.testing.TestClient, bad: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, "#/components/schemas/EventsRequest")
    resp = client.simulate_post("/v1/events", body=json.dumps(bad), headers=HEADERS)
    assert resp.status_code == 400
    assert_documented("POST", "/v1/events", 400, resp.headers, resp.content)


def _event(n: int, **extra: Any) -> dict[str, Any]:
    """A flat heartbeat of user n."""
    return {"type": "heartbeat", "user_id": f"{n:032x}", "version": "v1.3.0", "os": "linux", **extra}


JSON = {"Content-Type": "application/json"}
EVENT_CASES: list[tuple[str, bytes, dict[str, str], int]] = [
    ("heartbeat", HEARTBEAT, HEADERS, 200),
    ("duplicate", HEARTBEAT, HEADERS, 200),
    ("batch", json.dumps([_event(1), _event(2)]).encode(), JSON, 200),
    ("partial batch", json.dumps({"events": [_event(3), {"type": "x"}]}).encode(), JSON, 200),
    ("no valid event", json.dumps([{"type": "x"}, 5]).encode(), JSON, 400),
    ("broken json", b'{"type":', JSON, 400),
    ("NaN", b'{"type": "heartbeat", "n": NaN}', JSON, 400),
    ("duplicate keys", b'{"type": "heartbeat", "type": "deployment"}', JSON, 400),
    ("deep", b"[" * 5000 + b"]" * 5000, JSON, 400),
    ("invalid UTF-8", b'{"type": "\xff"}', JSON, 400),
    ("BOM", b"\xef\xbb\xbf{}", JSON, 400),
    ("missing field", json.dumps({"type": "heartbeat"}).encode(), JSON, 400),
    ("unknown type", json.dumps({**_event(4), "type": "nope"}).encode(), JSON, 400),
    ("corrupt gzip", b"\x1f\x8bnot gzip", {**JSON, "Content-Encoding": "gzip"}, 400),
    ("too large", b" " * (1024 * 1024 + 1), JSON, 413),
    ("gzip bomb", gzip.compress(b" " * (8 * 1024 * 1024)), {**JSON, "Content-Encoding": "gzip"}, 413),
    ("batch too large", json.dumps([_event(n) for n in range(101)]).encode(), JSON, 413),
    ("not json", b"a=b", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ("brotli", HEARTBEAT, {**JSON, "Content-Encoding": "br"}, 415),
]


@pytest.mark.parametrize(("name", "body", "headers", "status"), EVENT_CASES, ids=[c[0] for c in EVENT_CASES])
def test_event_replies_conform(
    client: falcon.testing.TestClient, name: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    resp = client.simulate_post("/v1/events", body=body, headers=headers)
    assert resp.status_code == status, resp.text
    assert_documented("POST", "/v1/events", status, resp.headers, resp.content)


def test_read_replies_conform(client: falcon.testing.TestClient) -> None:
    for body in (HEARTBEAT, CONFIG_CREATED, DEPLOYMENT):
        client.simulate_post("/v1/events", body=body, headers=HEADERS)
    cases = [
        ("/v1/version/latest", {}),
        ("/stats", {}),
        ("/metrics", {}),
        ("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}),
        ("/metrics", {"Accept-Encoding": "gzip"}),
        ("/", {}),
        ("/healthz", {}),
        ("/readyz", {}),
        ("/openapi.json", {}),
    ]
    for path, headers in cases:
        resp = client.simulate_get(path, headers=headers)
        assert resp.status_code == 200, path
        assert_documented("GET", path, 200, resp.headers, resp.content)


def test_token_replies_conform(config: Config, store: Any, clock: Any) -> None:
    app = create_app(config.replace(read_token=TOKEN), store=store, registry=CollectorRegistry(), clock=clock)
    client = falcon.testing.TestClient(app)
    basic = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    for path in sorted(PROTECTED):
        resp = client.simulate_get(path)
        assert resp.status_code == 401
        assert_documented("GET", path, 401, resp.headers, resp.content)
        for auth in (f"Bearer {TOKEN}", basic):
            ok = client.simulate_get(path, headers={"Authorization": auth})
            assert ok.status_code == 200
            assert_documented("GET", path, 200, ok.headers, ok.content)


def test_rate_limit_reply_conforms(config: Config, store: Any, clock: Any) -> None:
    app = create_app(
        config.replace(rate_limit=1.0, rate_burst=1), store=store, registry=CollectorRegistry(), clock=clock
    )
    client = falcon.testing.TestClient(app)
    assert client.simulate_post("/v1/events", body=HEARTBEAT, headers=HEADERS).status_code == 200
    resp = client.simulate_post("/v1/events", body=HEARTBEAT, headers=HEADERS)
    assert resp.status_code == 429
    assert_documented("POST", "/v1/events", 429, resp.headers, resp.content)


def test_store_down_replies_conform(config: Config, store: Any, clock: Any) -> None:
    app = create_app(config, store=DownStore(store), registry=CollectorRegistry(), clock=clock)  # type: ignore[arg-type]
    client = falcon.testing.TestClient(app)
    resp = client.simulate_post("/v1/events", body=HEARTBEAT, headers=HEADERS)
    assert resp.status_code == 503
    assert_documented("POST", "/v1/events", 503, resp.headers, resp.content)
    resp = client.simulate_get("/readyz")
    assert resp.status_code == 503
    assert_documented("GET", "/readyz", 503, resp.headers, resp.content)


@pytest.mark.slow
def test_live_server_replies_conform(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--read-token", TOKEN).wait_ready()
    try:
        for name, body, headers, status in EVENT_CASES:
            got, reply, reply_headers = http("POST", server.url + "/v1/events", body, headers)
            assert got == status, name
            assert_documented("POST", "/v1/events", got, dict(reply_headers), reply)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for path in ROUTES:
            if path == "/v1/events":
                continue
            got, reply, reply_headers = http("GET", server.url + path, headers=auth)
            assert got == 200, path
            assert_documented("GET", path, got, dict(reply_headers), reply)
            if path in PROTECTED:
                got, reply, reply_headers = http("GET", server.url + path)
                assert got == 401, path
                assert_documented("GET", path, got, dict(reply_headers), reply)
    finally:
        assert server.stop() == 0
