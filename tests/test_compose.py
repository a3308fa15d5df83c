"""Checks of docker-compose.yml and `make env` with the real docker-compose 1.29 (offline, no daemon)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import require_binary
from test_image import SERVE_IN_IMAGE, dockerfile_instructions, exec_form

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
MAKE_ENV = ROOT / "scripts" / "make-env.sh"
# Always on (no profile), and the alternative profiles. Exactly one profile runs at a time: every
# exporter answers to the DNS name "exporter", which Caddy proxies and Prometheus scrapes.
CORE_SERVICES = {"caddy", "prometheus", "alertmanager", "grafana"}
PROFILES = {
    "single": {"exporter"},
    "replicas": {"postgres", "exporter-a", "exporter-b"},
    "demo": {"demo-exporter", "demo"},
}
REPLICA_EXPORTERS = ("exporter-a", "exporter-b")
PRODUCTION_EXPORTERS = ("exporter", *REPLICA_EXPORTERS)
# What `make env` writes that is a secret: none may have a default anywhere compose reads.
SECRETS = (
    "GRAFANA_ADMIN_PASSWORD",
    "POSTGRES_PASSWORD",
    "FLAKEDROP_USER_ID_KEY",
    "FLAKEDROP_READ_TOKEN_FILE",
)
SUBNET = "172.29.53.0/24"
TOKEN_SECRET = "/run/secrets/read_token"
SERVE = ["serve", "--host", "0.0.0.0", "--port", "8080", "--data-dir", "/data"]


def compose() -> dict[str, Any]:
    """Return docker-compose.yml as data (YAML anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def services() -> dict[str, Any]:
    """Return the compose services."""
    return compose()["services"]


def clean_env() -> dict[str, str]:
    """Return this environment without anything compose would interpolate from it."""
    names = {*SECRETS, "GRAFANA_ANONYMOUS", "FLAKEDROP_DOMAIN"}
    return {
        key: value for key, value in os.environ.items() if key not in names and not key.startswith("COMPOSE_")
    }


def make_env(directory: Path) -> subprocess.CompletedProcess[str]:
    """Run the shipped generator (what `make env` runs) into a directory."""
    return subprocess.run(
        ["sh", str(MAKE_ENV), str(directory)], capture_output=True, text=True, timeout=30, check=False
    )


def read_dotenv(path: Path) -> dict[str, str]:
    """Return a .env file as a dict."""
    pairs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    """A .env written by the generator, as a first-time user gets it (never the developer's own .env)."""
    assert make_env(tmp_path).returncode == 0
    return tmp_path / ".env"


def docker_compose(env_file: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run the real docker-compose 1.29 offline on the shipped file with one env file."""
    binary = require_binary("docker-compose")
    return subprocess.run(
        [binary, "--env-file", str(env_file), "-f", str(COMPOSE), *args],
        cwd=ROOT,
        env={**clean_env(), **extra_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def resolved(env_file: Path) -> dict[str, Any]:
    """Return `docker-compose config`: the file as compose interpolates and normalises it."""
    result = docker_compose(env_file, "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


# Which services `docker-compose up` starts, from docker-compose 1.x's own code (the env file, the
# COMPOSE_PROFILES override, profile filtering and the depends_on check) with a stub Docker client.
UP_SERVICES = """
import sys
from unittest import mock
from compose.cli import command
with mock.patch.object(command, "get_client", return_value=mock.MagicMock(api_version="1.41")):
    project = command.project_from_options(sys.argv[1], {"--file": [sys.argv[2]], "--env-file": sys.argv[3]})
print(" ".join(service.name for service in project.get_services(include_deps=True)))
"""


def up_services(env_file: Path, **extra_env: str) -> set[str]:
    """Return the services a plain `docker-compose up` would start."""
    binary = require_binary("docker-compose")
    interpreter = Path(binary).read_text(encoding="utf-8", errors="replace").splitlines()[0]
    if not interpreter.startswith("#!") or "python" not in interpreter:
        pytest.skip(f"{binary} is not the Python docker-compose 1.x")
    result = subprocess.run(
        [*interpreter[2:].split(), "-c", UP_SERVICES, str(ROOT), str(COMPOSE), str(env_file)],
        cwd=ROOT,
        env={**clean_env(), **extra_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize("profile", ["", *PROFILES])
def test_docker_compose_accepts_the_file(env_file: Path, profile: str) -> None:
    """docker-compose parses and interpolates the file with a generated .env under each profile."""
    result = docker_compose(env_file, "config", "-q", **({"COMPOSE_PROFILES": profile} if profile else {}))
    assert result.returncode == 0, result.stderr


def test_compose_file_matches_the_compose_spec() -> None:
    """The file validates against the Compose Specification JSON schema."""
    binary = require_binary(str(Path(sys.executable).parent / "check-jsonschema"), "check-jsonschema")
    result = subprocess.run(
        [binary, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("missing", SECRETS)
def test_config_without_a_secret_stops_and_names_it(env_file: Path, tmp_path: Path, missing: str) -> None:
    """Drop any one secret from .env and compose refuses, naming it and `make env`: none has a default."""
    partial = tmp_path / "partial.env"
    kept = [line for line in env_file.read_text().splitlines() if not line.startswith(f"{missing}=")]
    partial.write_text("\n".join(kept) + "\n")
    result = docker_compose(partial, "config", "-q")
    assert result.returncode != 0
    assert f"set {missing} in .env (run make env)" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_secret_has_a_default_in_anything_that_ships() -> None:
    """Every use of a secret is ${NAME:?...}; no password, key or token default hides in shipped files."""
    text = COMPOSE.read_text(encoding="utf-8")
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses and all(use.startswith(":?") for use in uses), (name, uses)
    assert not re.search(r"\$\{\w*(PASSWORD|KEY|TOKEN|SECRET)\w*:?-", text)
    example = read_dotenv(ROOT / ".env.example")
    assert set(SECRETS) <= set(example) and not any(example[name] for name in SECRETS)
    tracked = subprocess.run(["git", "ls-files", ".env", "secrets"], cwd=ROOT, capture_output=True, text=True)
    assert tracked.stdout.strip() == "", "a generated secret file is tracked by git"
    for name, service in services().items():
        assert "FLAKEDROP_TELEMETRY_READ_TOKEN" not in (service.get("environment") or {}), name


def test_make_env_writes_private_random_secrets_and_never_overwrites(tmp_path: Path) -> None:
    """Mode 0600, a fresh random value per secret and per run, the token file beside it; a rerun keeps all."""
    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        directory.mkdir()
        assert make_env(directory).returncode == 0
    a, b = read_dotenv(first / ".env"), read_dotenv(second / ".env")
    assert stat.S_IMODE((first / ".env").stat().st_mode) == 0o600
    assert stat.S_IMODE((first / "secrets").stat().st_mode) == 0o700
    for name in ("GRAFANA_ADMIN_PASSWORD", "POSTGRES_PASSWORD", "FLAKEDROP_USER_ID_KEY"):
        assert len(a[name]) >= 32 and a[name] != b[name], name
    assert len(a["FLAKEDROP_USER_ID_KEY"]) >= 16, "the server rejects a shorter --user-id-key"
    assert a["COMPOSE_PROFILES"] == "single"
    token = (first / a["FLAKEDROP_READ_TOKEN_FILE"]).read_text()
    assert len(token) >= 32 and token != (second / "secrets" / "read_token").read_text()
    before = {path: path.read_bytes() for path in (first / ".env", first / "secrets" / "read_token")}
    rerun = make_env(first)
    assert rerun.returncode == 0 and "left unchanged" in rerun.stdout
    assert {path: path.read_bytes() for path in before} == before


def test_default_profile_runs_no_simulate(env_file: Path) -> None:
    """A plain `up` (the generated .env's profile, or none at all) starts no service that runs `simulate`."""
    found = services()
    unset = env_file.parent / "no-profile.env"
    unset.write_text("".join(line for line in env_file.open() if not line.startswith("COMPOSE_PROFILES=")))
    for started in (up_services(env_file), up_services(unset)):
        assert not [name for name in started if "simulate" in (found[name].get("command") or [])], started
    assert up_services(env_file) == CORE_SERVICES | PROFILES["single"]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_docker_compose_up_starts_one_profile(env_file: Path, profile: str) -> None:
    """COMPOSE_PROFILES from the shell overrides .env and starts the core plus that profile's services."""
    assert up_services(env_file, COMPOSE_PROFILES=profile) == CORE_SERVICES | PROFILES[profile]


def test_profiles_partition_the_services() -> None:
    """The core has no profile; every other service has exactly one, as PROFILES lists."""
    found = services()
    assert set(found) == CORE_SERVICES.union(*PROFILES.values())
    for name in CORE_SERVICES:
        assert "profiles" not in found[name], name
    for profile, names in PROFILES.items():
        for name in names:
            assert found[name]["profiles"] == [profile], name


def test_demo_is_isolated_from_every_production_exporter() -> None:
    """Whatever runs `simulate` shares no profile and no volume with a production exporter."""
    found = services()
    production_profiles = {p for name in PRODUCTION_EXPORTERS for p in found[name]["profiles"]}
    production_volumes = {v.split(":")[0] for name in PRODUCTION_EXPORTERS for v in found[name]["volumes"]}
    simulators = [name for name, service in found.items() if "simulate" in (service.get("command") or [])]
    assert simulators == ["demo"]
    for name in simulators:
        command = found[name]["command"]
        target = command[command.index("--url") + 1].split("//")[1].split(":")[0]
        assert "--force" not in command, "the demo must not overwrite a store that holds data"
        assert target in found and target not in PRODUCTION_EXPORTERS, target
        for demo in (name, target):
            assert not set(found[demo]["profiles"]) & production_profiles, demo
            assert not {v.split(":")[0] for v in found[demo].get("volumes", [])} & production_volumes, demo
        assert found[name]["depends_on"] == {target: {"condition": "service_healthy"}}
        assert found[name]["restart"] == "no"


def published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """Return (host address, host port) of each port a resolved service publishes ('' is every interface)."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), int(port["published"])))
        else:
            parts = str(port).split("/")[0].split(":")
            out.append((parts[0] if len(parts) == 3 else "", int(parts[-2])))
    return out


def test_only_the_tls_front_is_published_on_all_interfaces(env_file: Path) -> None:
    """Caddy publishes 443 (and 80); everything else publishes nothing, or only on 127.0.0.1."""
    found = resolved(env_file)["services"]
    assert ("", 443) in published(found["caddy"]) and {p for _, p in published(found["caddy"])} == {80, 443}
    for name, service in found.items():
        if name != "caddy":
            assert all(host == "127.0.0.1" for host, _ in published(service)), (name, published(service))
    for name in (*PRODUCTION_EXPORTERS, "demo-exporter", "grafana"):
        assert not published(found[name]), name
    assert "--web.enable-lifecycle" not in found["prometheus"]["command"]


def test_exporters_trust_exactly_the_compose_subnet(env_file: Path) -> None:
    """The network's fixed subnet is the exporters' trusted proxy, so limits and logs see the client."""
    config = resolved(env_file)
    assert [c["subnet"] for c in config["networks"]["default"]["ipam"]["config"]] == [SUBNET]
    for name in (*PRODUCTION_EXPORTERS, "demo-exporter"):
        env = config["services"][name]["environment"]
        assert env["FLAKEDROP_TELEMETRY_TRUSTED_PROXIES"] == SUBNET, name
    for name in PRODUCTION_EXPORTERS:
        assert float(config["services"][name]["environment"]["FLAKEDROP_TELEMETRY_RATE_LIMIT"]) > 0, name


def test_read_token_is_one_secret_file_shared_with_prometheus(env_file: Path) -> None:
    """Production exporters read the token from the compose secret Prometheus scrapes with."""
    config = resolved(env_file)
    # Relative to the project directory, where `make env` writes it.
    assert Path(config["secrets"]["read_token"]["file"]) == ROOT / "secrets" / "read_token"
    for name in (*PRODUCTION_EXPORTERS, "prometheus"):
        assert "read_token" in str(config["services"][name]["secrets"]), name
    for name in PRODUCTION_EXPORTERS:
        assert config["services"][name]["environment"]["FLAKEDROP_TELEMETRY_READ_TOKEN_FILE"] == TOKEN_SECRET
    prometheus = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "flakedrop"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": TOKEN_SECRET}
    assert "static_configs" not in job and any(
        p.startswith("/etc/prometheus/rules/") for p in prometheus["rule_files"]
    )
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["exporter"] and sd["type"] == "A" and sd["port"] == 8080


def test_caddy_serves_the_shipped_caddyfile_for_the_domain() -> None:
    """Caddy mounts caddy/Caddyfile and gets the domain; the real `caddy adapt` sees the compose upstreams."""
    caddy = services()["caddy"]
    assert (
        "./caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
        and "caddy-data:/data" in caddy["volumes"]
    )
    assert caddy["environment"]["FLAKEDROP_DOMAIN"] == "${FLAKEDROP_DOMAIN:-localhost}"
    binary = require_binary("caddy")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    result = subprocess.run(
        [binary, "adapt", "--config", str(ROOT / "caddy" / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["storage"]["root"].startswith("/data/")
    (server,) = config["apps"]["http"]["servers"].values()
    assert ":443" in " ".join(server["listen"]) and server["routes"][0]["match"] == [{"host": ["localhost"]}]
    dials = re.findall(r'"dial":\s*"([^"]+)"', result.stdout)
    assert sorted(dials) == ["exporter:8080", "grafana:3000"]


def test_images_are_pinned() -> None:
    """Third-party images name an exact version tag, never latest."""
    for name, service in services().items():
        image = service.get("image", "")
        if "build" in service:
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: {image!r} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image!r}"


def test_mounted_paths_and_named_volumes_exist() -> None:
    """Every bind-mounted host path exists in the repository; every named volume is declared."""
    declared = set(compose().get("volumes", {}))
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source}"
            elif not source.startswith("/"):
                assert source in declared, f"{name}: {source}"


def test_exporter_services() -> None:
    """Each exporter runs `serve` on 0.0.0.0:8080 with its own data volume and a health check."""
    found = services()
    for name in ("exporter", "demo-exporter"):
        assert found[name]["build"] == "." and found[name]["entrypoint"] == ["flakedrop-telemetry"]
        assert found[name]["command"] == SERVE, name
    assert "exporter-data:/data" in found["exporter"]["volumes"]
    assert "demo-data:/data" in found["demo-exporter"]["volumes"]
    test = " ".join(found["exporter"]["healthcheck"]["test"])
    assert "urllib" in test and "/healthz" in test


def test_exporters_answer_to_the_name_prometheus_scrapes() -> None:
    """`exporter` is the single exporter's service name and a network alias of each other exporter."""
    found = services()
    assert "networks" not in found["exporter"]
    for name in (*REPLICA_EXPORTERS, "demo-exporter"):
        assert found[name]["networks"] == {"default": {"aliases": ["exporter"]}}, name


def test_grafana_service() -> None:
    """Grafana: provisioning read-only, a required password, served by Caddy under /grafana/."""
    grafana = services()["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "${GRAFANA_ANONYMOUS:-false}"
    assert env["GF_SERVER_ROOT_URL"] == "https://${FLAKEDROP_DOMAIN:-localhost}/grafana/"
    assert env["GF_SERVER_SERVE_FROM_SUB_PATH"] == "true"
    assert (
        services()["exporter"]["environment"]["FLAKEDROP_TELEMETRY_GRAFANA_URL"] == env["GF_SERVER_ROOT_URL"]
    )


def test_replicas_share_postgres_and_the_user_id_key() -> None:
    """Both replicas use one PostgreSQL URL and one required user-id key, after PostgreSQL is healthy."""
    found = services()
    urls, keys = set(), set()
    for name in REPLICA_EXPORTERS:
        command = found[name]["command"]
        urls.add(command[command.index("--database-url") + 1])
        keys.add(found[name]["environment"]["FLAKEDROP_TELEMETRY_USER_ID_KEY"])
        assert "--user-id-key" not in command, f"{name}: set the key in one place, the env"
        assert found[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    (url,) = urls
    (key,) = keys
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert key.startswith("${FLAKEDROP_USER_ID_KEY:?")
    assert found["postgres"]["image"].startswith("postgres:15")


def test_service_commands_parse_with_the_cli() -> None:
    """The commands compose runs, and the image's CMD, are accepted by the real CLI parser."""
    from exporter.cli import build_parser

    parser = build_parser()
    for service in services().values():
        if service.get("entrypoint") == ["flakedrop-telemetry"]:
            parser.parse_args([str(argument) for argument in service["command"]])
    parser.parse_args(exec_form(dict(dockerfile_instructions())["CMD"]))
    assert [argument for argument in SERVE if argument not in ("--port", "8080")] == SERVE_IN_IMAGE
