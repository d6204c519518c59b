"""docker-compose.yml, the Dockerfile and .env.example have the properties production needs.

No Docker engine runs here: the files are parsed and checked; `docker compose config` runs
too where a docker client is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SECRET_NAME = re.compile(r"(PASSWORD|PWD|SECRET|TOKEN|API_KEY)")
REFERENCE = re.compile(r"\$\{(\w+)(:?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_has_the_production_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgresql", "temporal", "temporal-ui", "worker", "api", "mailpit"} <= set(services)
    assert services["temporal"]["image"].startswith("temporalio/auto-setup:")
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["worker"]["command"][:2] == ["touchpoint", "worker"]
    assert services["api"]["command"][:2] == ["touchpoint", "api"]
    # Nothing runs `touchpoint dev` (it would start a second, unplanned worker).
    assert not any("dev" in str(service.get("command", "")).split() for service in services.values())


def test_compose_worker_scales(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert _env(worker)["TOUCHPOINT_METRICS_BIND"].endswith(":9464")
    assert "--scale worker=3" in (ROOT / "docker-compose.yml").read_text()


def test_compose_postgres_creates_both_databases(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgresql"]
    init = [v for v in postgres["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert init, "no init script for the store's database"
    script = ROOT / init[0].split(":")[0].removeprefix("./")
    assert re.search(r"CREATE DATABASE touchpoint\b", script.read_text())
    # Temporal's own databases come from auto-setup, pointed at this server.
    assert _env(compose["services"]["temporal"])["POSTGRES_SEEDS"] == "postgresql"
    for name in ("worker", "api", "setup"):
        assert _env(compose["services"][name])["TOUCHPOINT_DATABASE_URL"].endswith("@postgresql:5432/touchpoint")


def test_compose_health_checks_and_ordered_start(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        if name != "setup":  # a one-shot job: the others wait for it to complete
            assert "test" in service.get("healthcheck", {}), f"{name} has no health check"
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions"
        for dependency, rule in depends.items():
            assert rule["condition"] in ("service_healthy", "service_completed_successfully"), (name, dependency)
            assert dependency in services
    assert services["worker"]["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert services["setup"]["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert "readyz" in str(services["api"]["healthcheck"]["test"])
    assert "readyz" in str(services["worker"]["healthcheck"]["test"])


def test_compose_secrets_come_only_from_env_file(compose: dict[str, Any]) -> None:
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*(\w+)=", example, re.MULTILINE))
    for name, service in compose["services"].items():
        for key, value in _env(service).items():
            if SECRET_NAME.search(key):
                match = REFERENCE.fullmatch(value)
                assert match, f"{name}: {key} is not taken from .env: {value!r}"
                assert match.group(1) in documented, f"{match.group(1)} is not in .env.example"
            for variable, _ in REFERENCE.findall(value):
                assert variable in documented, f"{name}: ${{{variable}}} is not in .env.example"
    for required in ("POSTGRES_PASSWORD", "TOUCHPOINT_SECRET_KEY", "TOUCHPOINT_API_TOKEN"):
        assert f"${{{required}:?" in (ROOT / "docker-compose.yml").read_text(), f"{required} must be required"
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    # .env.example holds no value for a secret.
    for key, value in re.findall(r"^(\w+)=(.*)$", example, re.MULTILINE):
        if SECRET_NAME.search(key):
            assert value == "", f".env.example gives {key} a value"


def test_dockerfile_is_slim_and_not_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert "--no-cache-dir" in text or "PIP_NO_CACHE_DIR=1" in text
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_dockerfile_installs_dependencies_before_copying_the_code() -> None:
    """The dependency layer depends on pyproject.toml only, so a code change reuses it."""
    instructions = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text()).splitlines()  # continuation lines joined
    steps = [line for line in instructions if re.match(r"^(COPY|RUN) ", line)]
    deps = next(i for i, line in enumerate(steps) if line.startswith("RUN ") and "pip install" in line)
    first_code = next(i for i, line in enumerate(steps) if re.match(r"^COPY .*\b(touchpoint|workflows|activities|worker\.py)\b", line))
    assert deps < first_code, steps
    assert all(line.split()[1:-1] == ["pyproject.toml"] for line in steps[:deps] if line.startswith("COPY ")), steps
    (install,) = [line for line in steps[first_code:] if "pip install" in line]
    assert "--no-deps" in install, install


def _compose_command() -> list[str] | None:
    """`docker compose` (v2) or `docker-compose` (v1), whichever this machine has."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(_compose_command() is None, reason="no docker compose client on this machine")
def test_docker_compose_config_accepts_the_file_and_requires_the_secrets(tmp_path: Path) -> None:
    command = _compose_command()
    assert command is not None
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    missing = subprocess.run([*command, "config", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=p\nTOUCHPOINT_SECRET_KEY=" + "k" * 40 + "\nTOUCHPOINT_API_TOKEN=t\n")
    result = subprocess.run([*command, "config", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_grafana_dashboard_charts_metrics_the_processes_export() -> None:
    import json

    from touchpoint.observability import metrics

    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    ours = {m._name for m in (metrics.EVENTS_ACCEPTED, metrics.EMAILS, metrics.PROVIDER_CALLS, metrics.PROVIDER_LATENCY)}
    for name in [*ours, "touchpoint_enrollments", "touchpoint_run_outcomes", "touchpoint_approvals_pending", metrics.SCHEDULE_TICK_LAG]:
        assert name in exprs, f"the dashboard has no panel for {name}"
    assert "temporal_" in exprs
