"""Checks of docker-compose.yml, the Dockerfile and .dockerignore (no Docker daemon needed)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import require_binary

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DOTENV = ROOT / ".env"
# Always on (no profile), and the two alternative profiles: one exporter with its own SQLite store, or
# two exporters sharing PostgreSQL. Never both: Prometheus scrapes every address of "exporter" in one job.
CORE_SERVICES = {"prometheus", "alertmanager", "grafana"}
SINGLE_SERVICES = {"exporter", "demo"}
REPLICA_SERVICES = {"postgres", "exporter-a", "exporter-b", "demo-replicas"}
REPLICA_EXPORTERS = ("exporter-a", "exporter-b")
PORTS = {
    "exporter": "8080:8080",
    "prometheus": "9090:9090",
    "alertmanager": "9093:9093",
    "grafana": "3000:3000",
}
SERVE = ["serve", "--host", "0.0.0.0", "--port", "8080", "--data-dir", "/data"]
# Files the image build copies; .dockerignore must not hide them.
BUILD_INPUTS = ["pyproject.toml", "setup.cfg", "README.md", "exporter"]


def compose() -> dict[str, Any]:
    """Return docker-compose.yml as data (YAML anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def services() -> dict[str, Any]:
    """Return the compose services."""
    return compose()["services"]


def clean_env() -> dict[str, str]:
    """Return an environment without the variables compose interpolates, so defaults apply."""
    names = (
        "GRAFANA_ADMIN_PASSWORD",
        "GRAFANA_ANONYMOUS",
        "GRAFANA_PUBLIC_URL",
        "POSTGRES_PASSWORD",
        "FLAKEDROP_USER_ID_KEY",
    )
    return {
        key: value for key, value in os.environ.items() if key not in names and not key.startswith("COMPOSE_")
    }


def dotenv() -> dict[str, str]:
    """Return the root .env file (which compose reads from the project directory) as a dict."""
    pairs = {}
    for line in DOTENV.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def default_of(value: str) -> str:
    """Return the default of a `${NAME:-default}` interpolation."""
    match = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", value)
    assert match, f"{value!r} is not ${{NAME:-default}}"
    return match.group(2)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile as (INSTRUCTION, arguments) pairs, continuation lines joined."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    pairs = []
    for text in logical:
        instruction, _, arguments = text.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def exec_form(arguments: str) -> list[str]:
    """Return the JSON (exec) form of a Dockerfile instruction's arguments."""
    value = json.loads(arguments)
    assert isinstance(value, list), arguments
    return value


PROFILE_ENVS = [{}, {"COMPOSE_PROFILES": "single"}, {"COMPOSE_PROFILES": "replicas"}]
PROFILE_IDS = ["dotenv-default", "single", "replicas"]


@pytest.mark.parametrize("extra_env", PROFILE_ENVS, ids=PROFILE_IDS)
def test_docker_compose_accepts_the_file(extra_env: dict[str, str]) -> None:
    """docker-compose (1.29, the Debian one) parses and interpolates the file under each profile."""
    binary = require_binary("docker-compose")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        env={**clean_env(), **extra_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_compose_file_matches_the_compose_spec() -> None:
    """The file validates against the Compose Specification JSON schema."""
    binary = require_binary(str(Path(sys.executable).parent / "check-jsonschema"), "check-jsonschema")
    result = subprocess.run(
        [binary, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_ports_and_profiles() -> None:
    """The services publish the documented ports; single-store and replica services are alternative profiles."""
    found = services()
    assert set(found) == CORE_SERVICES | SINGLE_SERVICES | REPLICA_SERVICES
    for name, port in PORTS.items():
        assert port in found[name]["ports"], name
    assert "8081:8080" in found["exporter-a"]["ports"]
    assert "8082:8080" in found["exporter-b"]["ports"]
    for name in CORE_SERVICES:
        assert "profiles" not in found[name], name
    for name in SINGLE_SERVICES:
        assert found[name]["profiles"] == ["single"], name
    for name in REPLICA_SERVICES:
        assert found[name]["profiles"] == ["replicas"], name


def test_dotenv_selects_the_single_profile() -> None:
    """The root .env makes a plain `docker compose up` run the single-store stack."""
    assert dotenv()["COMPOSE_PROFILES"] == "single"


def test_always_on_services_do_not_depend_on_a_profile() -> None:
    """A service without a profile must not depend on one that has a profile (compose refuses to start it)."""
    found = services()
    for name in CORE_SERVICES:
        extra = set(found[name].get("depends_on", [])) - CORE_SERVICES
        assert not extra, f"{name} depends on {sorted(extra)}"


# Which services `docker-compose up` starts, from docker-compose 1.x's own code (the .env file, the
# COMPOSE_PROFILES override, profile filtering and the depends_on check) with a stub Docker client.
# Unlike `up`, `docker-compose config --services` in 1.x lists every service whatever the profile.
UP_SERVICES = """
import sys
from unittest import mock
from compose.cli import command
with mock.patch.object(command, "get_client", return_value=mock.MagicMock(api_version="1.41")):
    project = command.project_from_options(sys.argv[1], {"--file": [sys.argv[2]]})
print(" ".join(service.name for service in project.get_services(include_deps=True)))
"""


@pytest.mark.parametrize(
    ("extra_env", "expected"),
    [
        ({}, CORE_SERVICES | SINGLE_SERVICES),
        ({"COMPOSE_PROFILES": "single"}, CORE_SERVICES | SINGLE_SERVICES),
        ({"COMPOSE_PROFILES": "replicas"}, CORE_SERVICES | REPLICA_SERVICES),
    ],
    ids=PROFILE_IDS,
)
def test_docker_compose_up_starts_one_profile(extra_env: dict[str, str], expected: set[str]) -> None:
    """docker-compose 1.29 reads COMPOSE_PROFILES=single from .env; the shell's COMPOSE_PROFILES overrides it."""
    binary = require_binary("docker-compose")
    interpreter = Path(binary).read_text(encoding="utf-8", errors="replace").splitlines()[0]
    if not interpreter.startswith("#!") or "python" not in interpreter:
        pytest.skip(f"{binary} is not the Python docker-compose 1.x")
    result = subprocess.run(
        [*interpreter[2:].split(), "-c", UP_SERVICES, str(ROOT), str(COMPOSE)],
        cwd=ROOT,
        env={**clean_env(), **extra_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == expected


def test_images_are_pinned() -> None:
    """Third-party images name an exact version tag, never latest."""
    for name, service in services().items():
        image = service.get("image", "")
        if "build" in service:
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: {image!r} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image!r}"


def test_host_paths_exist() -> None:
    """Every host path compose bind-mounts exists in the repository."""
    missing = []
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not (ROOT / source).exists():
                missing.append(f"{name}: {source}")
    assert not missing, f"missing mounted paths: {missing}"


def test_named_volumes_are_declared() -> None:
    """Every named volume a service uses is declared at the top level."""
    declared = set(compose().get("volumes", {}))
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: {source}"


def test_exporter_service() -> None:
    """The exporter runs `serve` on 0.0.0.0:8080 with its data in a named volume, and has a health check."""
    exporter = services()["exporter"]
    assert exporter["build"] == "."
    assert exporter["entrypoint"] == ["flakedrop-telemetry"]
    assert exporter["command"] == SERVE
    assert "exporter-data:/data" in exporter["volumes"]
    test = exporter["healthcheck"]["test"]
    assert test[0] == "CMD" and "urllib" in " ".join(test) and "/healthz" in " ".join(test)


def test_demo_service_runs_once_after_the_exporter_is_healthy() -> None:
    """The demo replays simulated traffic once, after the exporter(s) behind the name `exporter` are healthy."""
    found = services()
    healthy = {"condition": "service_healthy"}
    assert found["demo"]["depends_on"] == {"exporter": healthy}
    assert found["demo-replicas"]["depends_on"] == dict.fromkeys(REPLICA_EXPORTERS, healthy)
    for name in ("demo", "demo-replicas"):
        assert found[name]["command"][:3] == ["simulate", "--url", "http://exporter:8080"], name
        assert found[name]["restart"] == "no", name
    common = {key for key in found["demo"] if key not in ("profiles", "depends_on")}
    assert common == {key for key in found["demo-replicas"] if key not in ("profiles", "depends_on")}
    assert all(found["demo"][key] == found["demo-replicas"][key] for key in common)


def test_prometheus_and_alertmanager_mounts() -> None:
    """Prometheus gets its config and rules, Alertmanager its config, where their images look."""
    found = services()
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in found["prometheus"]["volumes"]
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in found["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in found["prometheus"]["command"]
    assert (
        "./prometheus/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro"
        in found["alertmanager"]["volumes"]
    )


def test_prometheus_config_reads_the_mounted_rules() -> None:
    """prometheus/prometheus.yml loads the mounted rules and finds the exporter(s) by the DNS name `exporter`."""
    path = ROOT / "prometheus" / "prometheus.yml"
    if not path.exists():
        pytest.skip("prometheus/prometheus.yml has not landed yet")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert any(pattern.startswith("/etc/prometheus/rules/") for pattern in config.get("rule_files", []))
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "flakedrop"]
    assert "static_configs" not in job
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["exporter"] and sd["type"] == "A" and sd["port"] == 8080


def test_exporters_answer_to_the_name_prometheus_scrapes() -> None:
    """`exporter` is the single exporter's service name and a network alias of each replica."""
    found = services()
    assert "networks" not in found["exporter"]
    for name in REPLICA_EXPORTERS:
        assert found[name]["networks"] == {"default": {"aliases": ["exporter"]}}, name


def test_grafana_service() -> None:
    """Grafana gets provisioning and dashboards read-only, a password from the env and an anonymous toggle."""
    grafana = services()["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-flakedrop}"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "${GRAFANA_ANONYMOUS:-false}"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == "/var/lib/grafana/dashboards/overview.json"


def test_replicas_share_postgres() -> None:
    """Both replica exporters use the same PostgreSQL URL and wait for PostgreSQL to be healthy."""
    found = services()
    urls = set()
    for name in REPLICA_EXPORTERS:
        command = found[name]["command"]
        urls.add(command[command.index("--database-url") + 1])
        assert found[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    (url,) = urls
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert found["postgres"]["image"].startswith("postgres:15")


def test_replicas_share_the_user_id_key() -> None:
    """Both replicas get one --user-id-key (the server refuses a key other than the store's) from the env."""
    found = services()
    keys = {found[name]["environment"]["FLAKEDROP_TELEMETRY_USER_ID_KEY"] for name in REPLICA_EXPORTERS}
    (key,) = keys
    assert key.startswith("${FLAKEDROP_USER_ID_KEY:-")
    assert len(default_of(key)) >= 16, "the server rejects a --user-id-key shorter than 16 characters"
    for name in REPLICA_EXPORTERS:
        assert "--user-id-key" not in found[name]["command"], f"{name}: set the key in one place, the env"


def test_service_commands_parse_with_the_cli() -> None:
    """The commands compose runs are accepted by the real CLI parser."""
    try:
        from exporter.cli import build_parser
    except ImportError as exc:
        pytest.skip(f"exporter.cli is not importable yet: {exc}")
    parser = build_parser()
    for service in services().values():
        if service.get("entrypoint") != ["flakedrop-telemetry"]:
            continue
        parser.parse_args([str(argument) for argument in service["command"]])
    cmd = dict(dockerfile_instructions())["CMD"]
    parser.parse_args(exec_form(cmd))


def test_dockerfile() -> None:
    """Pinned slim Python base, non-root user 10001, /data volume, port 8080, health check, CLI entrypoint."""
    instructions = dockerfile_instructions()
    bases = [arguments.split()[0] for instruction, arguments in instructions if instruction == "FROM"]
    assert bases and all(re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", base) for base in bases), bases
    by_name: dict[str, list[str]] = {}
    for instruction, arguments in instructions:
        by_name.setdefault(instruction, []).append(arguments)
    assert any("useradd" in run and "--uid 10001" in run for run in by_name["RUN"])
    assert by_name["USER"][-1].split(":")[0] == "10001"
    assert "/data" in by_name["VOLUME"][-1]
    assert "8080" in by_name["EXPOSE"][-1].split()
    healthcheck = by_name["HEALTHCHECK"][-1]
    assert "urllib" in healthcheck and "/healthz" in healthcheck
    assert exec_form(by_name["ENTRYPOINT"][-1]) == ["flakedrop-telemetry"]
    assert exec_form(by_name["CMD"][-1]) == SERVE == services()["exporter"]["command"]


def test_dockerfile_copies_existing_files() -> None:
    """Every file the build stage copies from the context exists and is not excluded by .dockerignore."""
    ignored = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    ignored = [line for line in ignored if line and not line.startswith("#")]
    for instruction, arguments in dockerfile_instructions():
        if instruction != "COPY" or arguments.startswith("--from"):
            continue
        *sources, _ = shlex.split(arguments)
        for source in sources:
            assert source.rstrip("/") in BUILD_INPUTS, (
                f"COPY {source}: add it to BUILD_INPUTS and check .dockerignore"
            )
    for name in BUILD_INPUTS:
        assert name not in ignored, f".dockerignore hides {name}"
        assert (ROOT / name).exists(), f"{name} is copied into the image but missing"
    assert {".git", ".venv", "data"} <= set(ignored)
