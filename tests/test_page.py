"""The page at /: its numbers equal /stats, it escapes every label, fits a phone, and asks for the token.

Browser tests drive Debian's Chromium through playwright against a real server process. Regenerate the
README screenshot with `.venv/bin/python tests/test_page.py docs/screenshot.png`.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
from procs import Server, http
from support import in_ci, require_binary

from exporter import clientbytes
from exporter.aggregates import fold
from exporter.page import Page, load_assets, render_page
from exporter.store import DailyRow, Snapshot

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HEADERS = {"Content-Type": "application/json", "User-Agent": "FlakeDrop/v1.3.5"}
TOKEN = "page-test-token-0123"
HOSTILE = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "'><img src=x onerror=alert(3)>",
    "</svg><script>alert(4)</script>",
    "</title><img src=x onerror=alert(5)>",
    "</textarea><svg onload=alert(6)>",
    "&lt;b&gt;&amp;",
)
KPI_KEYS = {
    "unique_users",
    "active_users.1d",
    "active_users.7d",
    "active_users.30d",
    "total_deployments",
    "successful_deploys",
    "failed_deploys",
    "success_rate",
    "configs_created",
    "configured_users",
    "activation_rate",
    "activated_users",
    "users_on_latest",
    "latest_version",
    "total_events",
    "heartbeats",
    "stickiness",
    "runs_per_active_user_1d",
}
PLAIN_FLOATS = {"runs_per_active_user_1d"}  # a per-user average, not a share
READ_STATS = """() => Array.from(document.querySelectorAll('[data-stat]'), e => [
    e.dataset.stat, e.getAttribute('value'), e.textContent])"""
READ_BREAKDOWNS = """() => Object.fromEntries(Array.from(document.querySelectorAll('table[data-breakdown]'), t => [
    t.dataset.breakdown,
    Array.from(t.querySelectorAll('tbody tr'), r => [r.dataset.key, Number(r.querySelector('data').value)])]))"""
OVERFLOW = "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"


# ----- helpers -------------------------------------------------------------------------------------


def user(n: int) -> str:
    """A 32-hex user id."""
    return f"{n:032x}"


def post(url: str, body: bytes) -> None:
    """POST one event and require a 200."""
    status, reply, _ = http("POST", url + "/v1/events", body, HEADERS)
    assert status == 200, reply


def get_stats(url: str, token: str = "") -> dict[str, Any]:
    """Read /stats (with the read token when given)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, body, _ = http("GET", url + "/stats", headers=headers)
    assert status == 200, body
    return json.loads(body)


def lookup(stats: dict[str, Any], key: str) -> Any:
    """Follow a dotted data-stat key into /stats."""
    value: Any = stats
    for part in key.split("."):
        value = value[part]
    return value


def assert_dom_equals_stats(found: list[list[str]], stats: dict[str, Any]) -> None:
    """Every data-stat element's machine value and shown text match /stats."""
    assert {key for key, _, _ in found} == KPI_KEYS
    for key, raw, text in found:
        want = lookup(stats, key)
        if want is None:
            assert (raw, text) == ("", "—"), key
        elif key in PLAIN_FLOATS:
            assert float(raw) == want and text == f"{want:,.1f}", key
        elif isinstance(want, float):
            assert float(raw) == want and text == f"{want * 100:.1f}%", key
        elif isinstance(want, int):
            assert int(raw) == want and int(text.replace(",", "")) == want, key
        else:
            assert raw == text == want, key


def send_known_traffic(url: str) -> None:
    """Five users in the client's exact bytes: 3 ok and 2 failed deployments, 3 configs, 4 heartbeats."""
    ns = time.time_ns()
    post(url, clientbytes.config_created(user(1), "v1.3.5", ns))
    post(url, clientbytes.heartbeat(user(1), "v1.3.5", "linux", "amd64", ns + 1))
    post(url, clientbytes.deployment(user(1), "v1.3.5", "linux", True, 12, ns + 2))
    post(url, clientbytes.deployment(user(1), "v1.3.5", "linux", True, 3, ns + 3))
    post(url, clientbytes.deployment(user(1), "v1.3.5", "linux", False, 7, ns + 4))
    post(url, clientbytes.heartbeat(user(2), "v1.3.5", "darwin", "arm64", ns + 5, {
        "total_deployments": 4, "weekly_deployments": 1, "last_active_date": "2026-11-26", "error_rate": 0.0,
    }))  # fmt: skip
    post(url, clientbytes.deployment(user(2), "v1.3.5", "darwin", True, 1, ns + 6))
    post(url, clientbytes.config_created(user(3), "v1.3.0", ns + 7))
    post(url, clientbytes.heartbeat(user(3), "v1.3.0", "darwin", "arm64", ns + 8))
    post(url, clientbytes.deployment(user(3), "v1.3.0", "darwin", False, 40, ns + 9))
    post(url, clientbytes.heartbeat(user(4), "v1.2.0", "windows", "amd64", ns + 10))
    post(url, clientbytes.config_created(user(5), "v1.3.0", ns + 11))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by playwright (never `playwright install`)."""
    path = require_binary("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        message = f"playwright is not installed ({exc}); run `make test`"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real servers on free ports; each is stopped by PID at the end."""
    started: list[Server] = []

    def start(*extra: str) -> Server:
        server = Server(tmp_path / f"data{len(started)}", *extra)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()


class PageWatch:
    """A browser page that records dialogs, page errors and CSP violations."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)

    def _dialog(self, dialog: Any) -> None:
        """Record and dismiss a dialog (an XSS payload firing)."""
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def open_page(browser: Any, url: str, width: int = 1280, height: int = 900, **context: Any) -> PageWatch:
    """Open url in a fresh context of the given viewport; return the watched page."""
    ctx = browser.new_context(viewport={"width": width, "height": height}, color_scheme="light", **context)
    watch = PageWatch(ctx.new_page())
    response = watch.page.goto(url)
    assert response is not None and response.status == 200, response and response.status
    return watch


def document_status(context: Any, url: str) -> tuple[int, list[str]]:
    """Navigate to url; return the last status and WWW-Authenticate values the document got."""
    from playwright.sync_api import Error as PlaywrightError

    seen: list[Any] = []
    page = context.new_page()
    page.on("response", lambda resp: seen.append(resp) if resp.url == url else None)
    try:
        page.goto(url)
    except PlaywrightError as exc:  # Chromium gives up once nobody answers the challenge right
        assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
    assert seen, f"no response for {url}"
    return seen[-1].status, seen[-1].header_values("www-authenticate")


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def hostile_snapshot() -> tuple[Snapshot, list[DailyRow]]:
    """Aggregates whose every client-derived label is an XSS attempt (as if normalization let them in)."""
    counters: dict[tuple[str, str, str, str], int] = {}
    for i, bad in enumerate(HOSTILE):
        other = HOSTILE[(i + 1) % len(HOSTILE)]
        counters[("users", bad, other, bad)] = 10 + i
        counters[("deployments", bad, other, "success")] = 5 + i
        counters[("deployments", bad, other, "failure")] = 1
        counters[("configs", bad, other, "")] = 2
        counters[("heartbeats", bad, other, bad)] = 3
        counters[("events", bad, "", "")] = 7
    counters[("user_flags", "activated", "", "")] = 20
    counters[("user_flags", "configured", "", "")] = 30
    active = {"1d": 12, "7d": 40, "30d": 70}
    by_version = {(window, bad): 3 for window in active for bad in HOSTILE}
    daily = [
        DailyRow(
            day=f"2026-11-{day:02d}",
            deployments_success=day,
            deployments_failure=day % 4,
            configs=1,
            new_users=1,
            active_by_version={bad: day + i for i, bad in enumerate(HOSTILE)},
        )
        for day in range(1, 29)
    ]
    daily += [DailyRow(HOSTILE[0], 1, 1, 0, 0, {HOSTILE[1]: 2}), DailyRow("2026-11-30", 0, 0, 0, 0, {})]
    return Snapshot(counters=counters, active=active, active_by_version=by_version), daily


class TagCollector(HTMLParser):
    """Collect every start tag and attribute name the way a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Record the tag and its attribute names."""
        self.tags.append(tag)
        self.attrs |= {name for name, _ in attrs}


# ----- unit tests (no browser) ----------------------------------------------------------------------


def escape_violations(html: str) -> list[str]:
    """Return what a browser would run or load from the page beyond its own one script (empty: safe)."""
    parser = TagCollector()
    parser.feed(html)
    found = [f"raw {bad!r}" for bad in HOSTILE if bad in html]
    if parser.tags.count("script") != 1:
        found.append(f"{parser.tags.count('script')} <script> tags")
    found += [f"<{tag}>" for tag in ("img", "textarea", "iframe") if tag in parser.tags]
    found += [f"attribute {name}" for name in sorted(parser.attrs) if name.startswith("on")]
    return found


def hostile_render(page: Page) -> str:
    """Render the hostile aggregates, with a hostile latest version, Grafana URL and base URL."""
    snap, daily = hostile_snapshot()
    view = fold(snap, '"><script>alert(8)</script>', 1_795_860_000.0)
    return page.render(view, daily, "https://g/'><img src=x onerror=alert(11)>", base_url="http://h'><b>")


def test_hostile_labels_are_escaped_in_html_svg_and_attributes() -> None:
    html = hostile_render(Page())
    assert escape_violations(html) == []
    assert "&lt;/svg&gt;&lt;script&gt;" in html, "labels are shown, escaped, not dropped"


def test_the_escaping_checks_catch_a_page_without_autoescape() -> None:
    """Rendered with autoescape off, every hostile label reaches the bytes raw and the checks say so."""
    html = hostile_render(Page(autoescape=False))
    found = escape_violations(html)
    assert {f"raw {bad!r}" for bad in HOSTILE} <= set(found)
    assert "<img>" in found and "attribute onerror" in found, found
    for place in ("data-key=", "<title>", "<th scope='col' class='num'>", "<tr data-day="):
        assert any(
            place + quote + bad in html or place + bad in html for bad in HOSTILE for quote in "'\""
        ), place


def test_hostile_host_header_is_escaped_in_the_empty_state(client: falcon.testing.TestClient) -> None:
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "h'><img src=x onerror=alert(1)>"}
    html = client.simulate_get("/", headers=headers).text
    assert "No events yet" in html and escape_violations(html) == []
    assert "https://h&#39;&gt;&lt;img src=x onerror=alert(1)&gt;/v1/events" in html


def empty_text(base_url: str) -> str:
    """The empty state's text (tags stripped) for a page reached at base_url."""
    html = render_page(Snapshot({}, {}, {}), [], "v1.3.5", "", 0.0, base_url=base_url)
    return re.sub(r"<[^>]+>", "", html.split("id='empty-h'")[1].split("</section>")[0]).replace("&#39;", "'")


def test_empty_state_tells_what_the_real_client_needs() -> None:
    text = empty_text("")
    assert "export FLAKEDROP_TELEMETRY_ENDPOINT=https://your-host\n" in text, "https, no port, by default"
    assert "your-host:8080" not in text and "http://your-host" not in text
    assert "https for the update check" in text and "GET /v1/version/latest over https only" in text
    assert "FLAKEDROP_ALLOW_CUSTOM_TELEMETRY=true" in text
    assert "(telemetry.flakedrop.io, api.flakedrop.io, localhost, 127.0.0.1)" in text
    assert "~/.flakedrop/analytics.json on the first run and wins over FLAKEDROP_TELEMETRY_ENDPOINT" in text
    assert "edit or delete that file" in text and "Heartbeats come once per CLI run" in text
    assert "plain http" not in text
    assert "reached over plain http" in empty_text("http://telemetry.example.org:8080")


def test_empty_state_shows_the_address_behind_the_tls_front(client: falcon.testing.TestClient) -> None:
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "telemetry.example.org"}
    html = client.simulate_get("/", headers=headers).text
    assert "export FLAKEDROP_TELEMETRY_ENDPOINT=https://telemetry.example.org\n" in html
    assert "curl -X POST https://telemetry.example.org/v1/events" in html and "plain http" not in html


@pytest.mark.parametrize(
    ("ok", "failed", "tone"),
    [
        pytest.param(10, 9, "", id="under-the-volume-guard"),
        pytest.param(91, 9, "good", id="at-or-below-warning"),
        pytest.param(80, 20, "warn", id="above-warning"),
        pytest.param(70, 30, "bad", id="above-critical"),
    ],
)
def test_success_tile_tone_follows_the_alert_thresholds(ok: int, failed: int, tone: str) -> None:
    counters = {
        ("deployments", "linux", "1.3.0", "success"): ok,
        ("deployments", "linux", "1.3.0", "failure"): failed,
    }
    html = render_page(Snapshot(counters, {}, {}), [], "v1.3.5", "", 0.0)
    assert f"<section class='{('tile ' + tone).strip()}' aria-labelledby='k-success-rate'>" in html


def test_grafana_link_only_for_an_http_url() -> None:
    snap, daily = Snapshot({}, {}, {}), []
    assert "Grafana" not in render_page(snap, daily, "v1.3.5", "", 0.0)
    assert "Grafana" not in render_page(snap, daily, "v1.3.5", "javascript:alert(1)", 0.0)
    page = render_page(snap, daily, "v1.3.5", "https://grafana.example/d/flakedrop-overview", 0.0)
    assert "href='https://grafana.example/d/flakedrop-overview'" in page


def test_many_versions_fold_into_one_adoption_series() -> None:
    versions = {f"1.{minor}.0": minor + 1 for minor in range(12)}
    daily = [DailyRow("2026-11-27", 0, 0, 0, 0, {}), DailyRow("2026-11-28", 3, 1, 0, 0, versions)]
    snap = Snapshot({("users", "linux", v, "amd64"): n for v, n in versions.items()}, {"1d": 78}, {})
    html = render_page(snap, daily, "v1.11.0", "", 1_795_860_000.0)
    legend = html.split("<ul class='legend'>")[2].split("</ul>")[0]
    assert legend.count("<li>") == 8 and "other versions" in legend
    assert legend.index("1.11.0") < legend.index("1.5.0"), "newest first"
    cells = html.split("id='t-adopt'")[1].split("<tbody>")[1].split("</tr>")[0]
    assert "<td class='num'>15</td>" in cells, "1.0.0 to 1.4.0 (1+2+3+4+5 users) fold together"
    assert "<td class='num'>78</td>" in cells, "the row total keeps every user"


def test_page_headers_and_inline_assets(client: falcon.testing.TestClient) -> None:
    resp = client.simulate_get("/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assets = load_assets()
    assert f"<style>{assets.css}</style>" in resp.text and f"<script>{assets.js}</script>" in resp.text
    assert resp.headers["content-security-policy"] == assets.content_security_policy()
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert resp.headers["cache-control"] == "no-store"
    assert "http://" not in assets.css + assets.js, "no external assets"


def test_render_reads_aggregates_only(client: falcon.testing.TestClient, store: Any) -> None:
    calls: list[str] = []
    for name in ("snapshot", "daily"):
        original = getattr(store, name)
        setattr(store, name, lambda *a, _o=original, _n=name: calls.append(_n) or _o(*a))
    assert client.simulate_get("/").status_code == 200
    assert sorted(calls) == ["daily", "snapshot"], "one snapshot and one daily read per page"


# ----- in real Chromium against a real server --------------------------------------------------------


@pytest.mark.slow
def test_page_numbers_equal_stats(browser: Any, start_server: Callable[..., Server]) -> None:
    server = start_server("--grafana-url", "http://grafana.example:3000/d/flakedrop-overview")
    send_known_traffic(server.url)
    stats = get_stats(server.url)
    assert (stats["unique_users"], stats["total_deployments"], stats["failed_deploys"]) == (5, 5, 2)
    assert (stats["configs_created"], stats["activated_users"], stats["users_on_latest"]) == (3, 3, 2)
    watch = open_page(browser, server.url + "/")
    page = watch.page
    assert_dom_equals_stats(page.evaluate(READ_STATS), stats)
    breakdowns = page.evaluate(READ_BREAKDOWNS)
    for key in ("os_breakdown", "version_breakdown", "arch_breakdown", "events_by_type"):
        assert dict(breakdowns[key]) == stats[key], key
    assert [k for k, _ in breakdowns["version_breakdown"]] == list(stats["version_breakdown"])
    share = page.get_attribute("[data-derived='users_on_latest/unique_users']", "value")
    assert float(share or "nan") == round(2 / 5, 4)
    assert page.text_content("#t-deploy [data-total='deployments']") == str(stats["total_deployments"])
    assert page.locator("#c-deploy ~ figure svg title").count() >= 30, "one <title> per day"
    assert page.get_attribute("nav a:has-text('Grafana')", "href") == (
        "http://grafana.example:3000/d/flakedrop-overview"
    )
    assert page.get_attribute("nav a:has-text('stats')", "href") == "/stats"
    assert page.locator("nav a[href='/metrics']").count() == 1
    assert page.locator("text=No events yet").count() == 0
    assert not watch.dialogs and not watch.errors, watch.errors
    screenshot(page, "page-populated.png")


@pytest.mark.slow
def test_page_fits_a_phone_and_fills_a_wall(browser: Any, start_server: Callable[..., Server]) -> None:
    server = start_server()
    send_known_traffic(server.url)
    phone = open_page(browser, server.url + "/", width=375, height=812).page
    phone.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
    scroll_width, client_width = phone.evaluate(OVERFLOW)
    assert scroll_width <= client_width == 375
    screenshot(phone, "page-phone.png")
    wall = open_page(browser, server.url + "/", width=2560, height=1440).page
    tops = wall.evaluate("() => Array.from(document.querySelectorAll('.tile'), t => t.offsetTop)")
    assert len(tops) == 9 and len(set(tops)) == 1, "the nine tiles share one row on a wall screen"
    assert wall.evaluate(OVERFLOW)[0] <= 2560
    screenshot(wall, "page-wall.png")


@pytest.mark.slow
def test_hostile_strings_posted_by_clients(browser: Any, start_server: Callable[..., Server]) -> None:
    server = start_server()
    for i, bad in enumerate(HOSTILE):
        for os_, version in ((bad, "v1.3.5"), ("linux", bad), (bad, bad)):
            event = {"type": "heartbeat", "user_id": user(100 + i), "version": version, "os": os_}
            post(server.url, json.dumps({**event, "arch": "amd64"}).encode())
    watch = open_page(browser, server.url + "/")
    page = watch.page
    page.wait_for_timeout(200)
    assert not watch.dialogs
    assert page.locator("img, textarea, iframe, object, embed").count() == 0
    assert page.locator("script").count() == 1 and page.locator("[onerror], [onload]").count() == 0
    assert_dom_equals_stats(page.evaluate(READ_STATS), get_stats(server.url))


@pytest.mark.slow
def test_hostile_labels_rendered_directly_in_chromium(browser: Any) -> None:
    snap, daily = hostile_snapshot()
    html = render_page(snap, daily, "<script>alert(9)</script>", '"><img src=x onerror=alert(10)>', 0.0)
    ctx = browser.new_context(viewport={"width": 375, "height": 812})
    watch = PageWatch(ctx.new_page())
    watch.page.set_content(html)  # no CSP header here: escaping alone must hold
    watch.page.wait_for_timeout(200)
    page = watch.page
    assert not watch.dialogs
    assert page.locator("img, textarea, iframe, object, embed").count() == 0
    assert page.locator("script").count() == 1 and page.locator("[onerror], [onload]").count() == 0
    shown = page.evaluate("() => Array.from(document.querySelectorAll('tr[data-key]'), r => r.dataset.key)")
    assert set(HOSTILE) <= set(shown), "every hostile label is shown as text"
    titles = page.evaluate("() => Array.from(document.querySelectorAll('svg title'), t => t.textContent)")
    assert any(HOSTILE[3] in title for title in titles)
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
    scroll_width, client_width = page.evaluate(OVERFLOW)
    assert scroll_width <= client_width, "long labels wrap instead of widening a phone's page"
    ctx.close()


@pytest.mark.slow
def test_live_refresh_swaps_main_without_reload(browser: Any, start_server: Callable[..., Server]) -> None:
    server = start_server()
    send_known_traffic(server.url)
    watch = open_page(browser, server.url + "/")
    page = watch.page
    page.evaluate("() => { window.notReloaded = true; }")
    page.evaluate("() => { document.getElementById('d-deploy').open = true; }")
    post(server.url, clientbytes.heartbeat(user(42), "v1.3.5", "freebsd", "amd64", time.time_ns()))
    assert page.evaluate("() => window.flakedropRefresh()") is True, page.inner_text("#live")
    assert page.evaluate("() => window.notReloaded") is True, "refresh swapped <main>, no reload"
    assert page.evaluate("() => document.getElementById('d-deploy').open") is True, "open tables stay open"
    assert page.inner_text("[data-stat='unique_users']") == "6"
    assert_dom_equals_stats(page.evaluate(READ_STATS), get_stats(server.url))
    assert "last refreshed" in page.inner_text("#live")
    assert not watch.dialogs and not watch.errors, watch.errors  # no CSP violation: the hashes match


@pytest.mark.slow
def test_read_token_basic_challenge(browser: Any, start_server: Callable[..., Server]) -> None:
    server = start_server("--read-token", TOKEN)
    send_known_traffic(server.url)
    anonymous = browser.new_context()
    status, challenges = document_status(anonymous, server.url + "/")
    assert status == 401
    assert any(re.fullmatch(r'Basic realm="[^"]*"(, charset="UTF-8")?', c) for c in challenges), (
        f"Chromium ignores a Basic challenge that shares its header with another scheme: {challenges}; "
        "send Basic as its own WWW-Authenticate header"
    )
    anonymous.close()
    wrong = browser.new_context(http_credentials={"username": "me", "password": "wrong"})
    assert document_status(wrong, server.url + "/")[0] == 401
    wrong.close()

    # The browser answers the Basic challenge with the token as password (any user name).
    creds = {"username": "maintainer", "password": TOKEN}
    watch = open_page(browser, server.url + "/", http_credentials=creds)
    page = watch.page
    assert_dom_equals_stats(page.evaluate(READ_STATS), get_stats(server.url, TOKEN))
    post(server.url, clientbytes.heartbeat(user(42), "v1.3.5", "freebsd", "amd64", time.time_ns()))
    assert page.evaluate("() => window.flakedropRefresh()") is True, page.inner_text("#live")
    assert page.inner_text("[data-stat='unique_users']") == "6", "the refresh fetch sent the credentials"
    assert not watch.dialogs and not watch.errors, watch.errors


@pytest.mark.slow
def test_empty_state_says_how_to_send_the_first_event(
    browser: Any, start_server: Callable[..., Server]
) -> None:
    server = start_server()
    watch = open_page(browser, server.url + "/", width=375, height=812)
    page = watch.page
    text = page.inner_text("main")
    assert "No events yet" in text
    assert f"export FLAKEDROP_TELEMETRY_ENDPOINT={server.url}" in text
    assert "POST /v1/events" in text and f"{server.url}/v1/events" in text
    assert "FLAKEDROP_ALLOW_CUSTOM_TELEMETRY=true" in text and "~/.flakedrop/analytics.json" in text
    assert "reached over plain http" in text, "the test server is http: the update check cannot reach it"
    assert page.locator("ul.needs li").count() == 4
    assert page.locator("nav a:has-text('Grafana')").count() == 0, "hidden without --grafana-url"
    assert_dom_equals_stats(page.evaluate(READ_STATS), get_stats(server.url))
    assert page.evaluate(OVERFLOW)[0] <= 375
    screenshot(page, "page-empty.png")


# ----- the README screenshot ------------------------------------------------------------------------


def make_screenshot(out: Path, users: int = 300, days: int = 14) -> None:
    """Replay simulate traffic with the server's clock following each event's time; screenshot the page."""
    import tempfile
    from calendar import timegm

    import waitress

    from exporter.app import create_app
    from exporter.config import Config
    from exporter.simulate import plan_traffic, send
    from exporter.store.sqlite import SQLiteStore

    now = time.time()
    events, _ = plan_traffic(users, days, now=now)

    def stamp(body: bytes) -> float:
        """The event's client time (Unix seconds)."""
        text = json.loads(body)["data"]["data"]["timestamp"]
        return float(timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))

    clock = [now - days * 86400]
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "telemetry.db", clock=lambda: clock[0])
        config = Config(
            data_dir=tmp, user_id_key="screenshot-key-0123456789", grafana_url="http://localhost:3000"
        )
        app = create_app(config, store=store, clock=lambda: clock[0])
        server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
        threading.Thread(target=server.run, daemon=True).start()
        url = f"http://127.0.0.1:{server.effective_port}"
        hours: dict[int, list[Any]] = {}
        for event in sorted(events, key=lambda e: stamp(e.body)):
            hours.setdefault(int(stamp(event.body)) // 3600, []).append(event)
        for hour, batch in sorted(hours.items()):
            clock[0] = hour * 3600 + 1800.0
            send(url, batch, concurrency=1, progress=False)
        clock[0] = now
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            chromium = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = chromium.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
            page.goto(url + "/")
            page.screenshot(path=str(out), full_page=True)
            chromium.close()
        server.close()
        store.close()


if __name__ == "__main__":
    make_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.png"))
