"""A real Caddy from caddy/Caddyfile, internal TLS on 127.0.0.1, in front of a real server (no mocks)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import wire_samples
from procs import Server, free_port
from support import require_binary

from exporter import clientbytes

pytestmark = pytest.mark.slow

CADDYFILE = Path(__file__).resolve().parent.parent / "caddy" / "Caddyfile"
TOKEN = "tls-front-read-token"
BURST = 3
# The client's UpdateInfo struct: field name -> the JSON type Go's decoder needs.
UPDATE_INFO = {"latest_version": str, "release_date": str, "update_url": str, "critical": bool}


@dataclass
class Front:
    """Caddy on an HTTPS loopback port, proxying to one exporter, and a context trusting Caddy's CA."""

    port: int
    context: ssl.SSLContext
    server: Server

    def request(
        self,
        method: str,
        path: str,
        *,
        source: str = "127.0.0.1",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Make one HTTPS request from a chosen loopback source address; return status and body."""
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.context, timeout=10, source_address=(source, 0)
        )
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def _start_caddy(tmp: Path, upstream: str, https_port: int) -> tuple[subprocess.Popen[bytes], Path]:
    """Run `caddy run` on the shipped Caddyfile with loopback ports and a private storage dir."""
    binary = require_binary("caddy")
    storage = tmp / "caddy-storage"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "XDG_DATA_HOME": str(tmp / "xdg-data"),
        "XDG_CONFIG_HOME": str(tmp / "xdg-config"),
        "CADDY_ADMIN": "off",
        "CADDY_STORAGE": str(storage),
        "CADDY_HTTP_PORT": str(free_port()),
        "CADDY_HTTPS_PORT": str(https_port),
        "CADDY_BIND": "127.0.0.1",
        "FLAKEDROP_DOMAIN": "127.0.0.1",
        "EXPORTER_UPSTREAM": upstream,
    }
    log = tmp / "caddy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
        )
    return proc, storage / "pki" / "authorities" / "local" / "root.crt"


def _wait_for_tls(proc: subprocess.Popen[bytes], root: Path, port: int, log: Path) -> ssl.SSLContext:
    """Wait (bounded) until Caddy's root CA exists and /healthz answers 200 over verified HTTPS."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"caddy exited with {proc.returncode}: {log.read_text()}")
        if root.exists():
            context = ssl.create_default_context(cafile=str(root))
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return context
            except (OSError, ssl.SSLError, http.client.HTTPException):
                pass
            finally:
                conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"caddy did not serve verified HTTPS in 30 s: {log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child we started, by its PID, bounded."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """Start the exporter (read token, small rate limit, trusting Caddy on 127.0.0.1) and Caddy before it."""
    tmp = tmp_path_factory.mktemp("tls-front")
    require_binary("caddy")
    server = Server(
        tmp / "data",
        "--read-token",
        TOKEN,
        "--rate-limit",
        "0.001",
        "--rate-burst",
        str(BURST),
        "--trusted-proxies",
        "127.0.0.1",
    ).wait_ready()
    https_port = free_port()
    caddy, root = _start_caddy(tmp, f"127.0.0.1:{server.port}", https_port)
    try:
        context = _wait_for_tls(caddy, root, https_port, tmp / "caddy.log")
        yield Front(https_port, context, server)
    finally:
        _stop(caddy)
        server.stop()


def test_the_clients_exact_bytes_are_accepted_and_counted(front: Front) -> None:
    """The three bodies the shipped client sends arrive through TLS and show up in /stats."""
    samples = (wire_samples.HEARTBEAT, wire_samples.CONFIG_CREATED, wire_samples.DEPLOYMENT)
    for body in samples:
        status, answer = front.request(
            "POST", "/v1/events", source="127.0.0.4", body=body, headers=wire_samples.HEADERS
        )
        assert 200 <= status < 300, answer
    status, answer = front.request("GET", "/stats", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, answer
    stats = json.loads(answer)
    assert stats["events_by_type"] == {"config_created": 1, "deployment": 1, "heartbeat": 1}
    assert (stats["unique_users"], stats["failed_deploys"], stats["configs_created"]) == (1, 1, 1)


def test_update_check_decodes_into_the_clients_update_info(front: Front) -> None:
    """/v1/version/latest over https has exactly the client's fields, with the JSON types it decodes."""
    status, answer = front.request("GET", "/v1/version/latest", headers={"User-Agent": "Go-http-client/1.1"})
    assert status == 200, answer
    info = json.loads(answer)
    assert set(UPDATE_INFO) <= set(info)
    for name, kind in UPDATE_INFO.items():
        assert type(info[name]) is kind, (name, info[name])
    assert info["update_url"].startswith("https://")


@pytest.mark.parametrize("path", ["/", "/stats", "/metrics"])
def test_read_endpoints_need_the_token_through_the_front(front: Front, path: str) -> None:
    """Caddy passes Authorization through: 401 without the token, 200 with it."""
    assert front.request("GET", path)[0] == 401
    assert front.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_rate_limit_keys_on_the_forwarded_client_not_on_caddy(front: Front) -> None:
    """One client's burst is its own: a second client address still gets through, and spoofing does not help."""

    def post(source: str, n: int, spoof: str | None = None) -> int:
        body = clientbytes.heartbeat(f"{n:032x}", "v1.3.0", "linux", "amd64", time.time_ns())
        headers = {**wire_samples.HEADERS, **({"X-Forwarded-For": spoof} if spoof else {})}
        return front.request("POST", "/v1/events", source=source, body=body, headers=headers)[0]

    first = [post("127.0.0.2", n) for n in range(BURST)]
    assert all(200 <= status < 300 for status in first), first
    assert post("127.0.0.2", 100) == 429
    # A forged header is appended to by Caddy, so the exporter still sees 127.0.0.2 as the client.
    assert post("127.0.0.2", 101, spoof="203.0.113.9") == 429
    assert 200 <= post("127.0.0.3", 200) < 300
