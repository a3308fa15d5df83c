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
CORE_SERVICES = {"exporter", "demo", "prometheus", "alertmanager", "grafana"}
REPLICA_SERVICES = {"postgres", "exporter-a", "exporter-b"}
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
    names = ("GRAFANA_ADMIN_PASSWORD", "GRAFANA_ANONYMOUS", "GRAFANA_PUBLIC_URL", "POSTGRES_PASSWORD")
    return {
        key: value for key, value in os.environ.items() if key not in names and not key.startswith("COMPOSE_")
    }


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


@pytest.mark.parametrize("profile", [[], ["--profile", "replicas"]], ids=["default", "replicas"])
def test_docker_compose_accepts_the_file(profile: list[str]) -> None:
    """docker-compose (1.29, the Debian one) parses and interpolates the file."""
    binary = require_binary("docker-compose")
    result = subprocess.run(
        [binary, *profile, "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        env=clean_env(),
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
    """The stack's services publish the documented ports; the replica services sit behind a profile."""
    found = services()
    assert set(found) == CORE_SERVICES | REPLICA_SERVICES
    for name, port in PORTS.items():
        assert port in found[name]["ports"], name
    for name in CORE_SERVICES:
        assert "profiles" not in found[name], name
    for name in REPLICA_SERVICES:
        assert found[name]["profiles"] == ["replicas"], name


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
    """The demo replays simulated traffic once, after the exporter reports healthy."""
    demo = services()["demo"]
    assert demo["command"][:3] == ["simulate", "--url", "http://exporter:8080"]
    assert demo["depends_on"] == {"exporter": {"condition": "service_healthy"}}
    assert demo["restart"] == "no"


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
    """prometheus/prometheus.yml loads rules from the mounted directory and scrapes the compose exporter."""
    path = ROOT / "prometheus" / "prometheus.yml"
    if not path.exists():
        pytest.skip("prometheus/prometheus.yml has not landed yet")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert any(pattern.startswith("/etc/prometheus/rules/") for pattern in config.get("rule_files", []))
    assert "exporter:8080" in path.read_text(encoding="utf-8")


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
    for name in ("exporter-a", "exporter-b"):
        command = found[name]["command"]
        urls.add(command[command.index("--database-url") + 1])
        assert found[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    (url,) = urls
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert found["postgres"]["image"].startswith("postgres:15")


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
