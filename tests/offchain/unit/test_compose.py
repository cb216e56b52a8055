"""docker-compose.yml and Dockerfile against the code they run.

Docker itself is usually absent where tests run, so the file is checked against the sources of
truth instead: the port map (offchain.services.registry), the `caas` command group (click parses
every command line the file uses), and the settings (the file's environment must build the
Settings it means). `docker compose config` runs too where docker compose is installed.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from offchain.cli import main as caas_cli
from offchain.platform.settings import Settings, flat_env_names
from offchain.services.registry import SERVICES

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPENDENCIES = {"postgres", "redis", "anvil"}
JOBS = {"migrate", "deploy"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host interface, host port, container port) of every published port."""
    triples = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        interface = parts[0] if len(parts) == 3 else "0.0.0.0"
        triples.append((interface, int(parts[-2]), int(parts[-1])))
    return triples


def _caas_commands(compose: dict[str, Any]) -> dict[str, list[str]]:
    return {
        name: service["command"]
        for name, service in compose["services"].items()
        if isinstance(service.get("command"), list) and service["command"][:1] == ["caas"]
    }


def test_every_port_of_the_map_has_exactly_one_service_serving_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in SERVICES.items():
        serving = [
            key
            for key, service in services.items()
            if str(spec.port) in [str(p) for p in service.get("expose", [])]
            or any(container == spec.port for _, _, container in _ports(service))
        ]
        assert serving == [name], f"port {spec.port}: {serving}"
        assert services[name]["command"] == ["caas", "serve", name]
    served = {cmd[2] for cmd in _caas_commands(compose).values() if cmd[1] == "serve"}
    assert served == set(SERVICES)


def test_only_the_gateway_publishes_a_port(compose: dict[str, Any]) -> None:
    """The internal services talk on the compose network only (issue 14): a published 8001-8010
    would put service routes one stolen token away from the outside."""
    published = {name: _ports(service) for name, service in compose["services"].items() if _ports(service)}
    assert published == {
        "gateway": [("0.0.0.0", 8000, 8000)],
        "simulator": [("127.0.0.1", 8100, 8100)],  # dev control endpoints, this host only
    }
    env = compose["services"]["gateway"]["environment"]
    assert env["SERVICE_KEY"].startswith("dev-")  # production refuses it: a deployment sets its own


def test_every_caas_command_line_parses_with_the_real_cli(compose: dict[str, Any]) -> None:
    commands = _caas_commands(compose)
    assert {"migrate", "deploy", "simulator"} <= set(commands)
    for service, argv in commands.items():
        subcommand = caas_cli.commands.get(argv[1])
        assert subcommand is not None, f"{service}: `caas {argv[1]}` does not exist"
        # click parses options and arguments exactly as the container's command would
        with subcommand.make_context(argv[1], list(argv[2:])) as ctx:
            assert ctx.command is subcommand
    bad = caas_cli.commands["deploy"]
    with pytest.raises(click.UsageError):
        bad.make_context("deploy", ["--no-such-option"])


def _settings_env_names() -> set[str]:
    names = {"CAAS_ENV"}
    for group_name, field in Settings.model_fields.items():
        group = field.annotation
        if not (isinstance(group, type) and hasattr(group, "model_fields")):
            continue
        for name, sub in group.model_fields.items():
            names.add(f"{group_name}__{name}".upper())
            names.update(flat_env_names(sub.validation_alias))
    return names


def _read_from_environ(name: str) -> bool:
    pattern = re.compile(rf"os\.environ(\.get\(|\[)\s*\"{re.escape(name)}\"")
    return any(pattern.search(path.read_text()) for path in (ROOT / "offchain").rglob("*.py"))


def test_every_environment_name_is_read_by_the_code(compose: dict[str, Any]) -> None:
    known = _settings_env_names()
    for name, service in compose["services"].items():
        if name in DEPENDENCIES:
            continue
        for key in service.get("environment", {}):
            assert key in known or _read_from_environ(key), f"{name}: {key} is read by nothing"


def test_the_environment_builds_the_settings_it_means(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = compose["services"]["gateway"]["environment"]
    for key in [k for k in os.environ if k.isupper() and ("__" in k or k in _settings_env_names())]:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.database.url == env["DATABASE_URL"]
    assert settings.redis.url == env["REDIS_URL"]
    assert settings.chain.rpc_url == env["CHAIN_RPC_URL"]
    assert str(settings.chain.deployment_file) == env["DEPLOYMENT_FILE"]
    assert settings.chain.sender_private_key is not None
    assert len(settings.chain.signer_keys) == 3
    assert settings.services.bind_host == "0.0.0.0"  # reachable from the other containers
    # every service reaches every other by its compose name on its own port
    for name, spec in SERVICES.items():
        assert settings.services.urls[name] == f"http://{name}:{spec.port}"
    for url in (
        settings.database.url,
        settings.redis.url,
        settings.chain.rpc_url,
        settings.rails.simulator_url,
    ):
        host = re.match(r"\w+://(?:[^@/]*@)?([^:/]+)", url or "").group(1)
        assert host in compose["services"], f"{url} names no compose service"


def test_healthchecks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        if name in JOBS:
            assert service.get("restart") == "no"
            continue
        assert "healthcheck" in service, f"{name} has no healthcheck"
    for name, spec in SERVICES.items():
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{spec.port}/health/ready" in probe
        depends = services[name]["depends_on"]
        assert {dep: depends[dep]["condition"] for dep in DEPENDENCIES} == dict.fromkeys(
            DEPENDENCIES, "service_healthy"
        )
        assert {job: depends[job]["condition"] for job in JOBS} == dict.fromkeys(
            JOBS, "service_completed_successfully"
        )
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["deploy"]["depends_on"]["anvil"]["condition"] == "service_healthy"
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert rule["condition"] in CONDITIONS


def test_the_deployment_file_is_shared_by_the_deploy_job_and_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    target = Path(services["deploy"]["environment"]["DEPLOYMENT_FILE"]).parent
    # `caas deploy --network local` writes <dir of DEPLOYMENT_FILE>/local.json
    assert Path(services["deploy"]["environment"]["DEPLOYMENT_FILE"]).name == "local.json"
    assert "--network" in services["deploy"]["command"]

    def mounts(service: dict[str, Any]) -> dict[str, str]:
        return {str(v).split(":")[1]: str(v).split(":")[0] for v in service.get("volumes", [])}

    assert mounts(services["deploy"])[str(target)] == "deployments"
    for name in SERVICES:
        assert mounts(services[name])[str(target)] == "deployments"


def _dockerignored(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) or path.split("/")[0] == p for p in patterns)


def test_dockerfile_copies_what_exists_and_installs_the_lock() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()]
    assert next(line for line in lines if line.startswith("FROM")) == "FROM python:3.11-slim"
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            assert not _dockerignored(source, ignored), f"COPY {source}: excluded by .dockerignore"
    text = "\n".join(lines)
    assert "pip install -r requirements.lock" in text
    assert "pip install --no-deps -e ." in text
    # what the code reads at run time from the checkout layout must be in the image
    assert ["contracts", "./contracts"] in [line.split()[1:] for line in lines if line.startswith("COPY")]


def _docker_compose() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    command = _docker_compose()
    if command is None:
        pytest.skip("docker compose is not installed here")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
