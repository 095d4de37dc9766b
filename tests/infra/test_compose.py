"""The compose stack in infra/: parsed and checked here, where no Docker engine runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from driftloop.settings import DaskSettings, HomeSettings, S3Settings

from .conftest import Postgres

ROOT = Path(__file__).parents[2]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "compose.yaml"
SERVICES = {"postgres", "minio", "create-buckets", "prefect-server", "mlflow", "worker"}
DRIFTLOOP_IMAGE = {
    "prefect-server",
    "mlflow",
    "worker",
    "dask-scheduler",
    "dask-worker",
}
# ${NAME:-default} as compose reads it with NAME unset; $$ is a literal $.
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    text = _VARIABLE.sub(lambda m: m["default"] or "", COMPOSE.read_text())
    return yaml.safe_load(text.replace("$$", "$"))


@pytest.fixture(scope="module")
def services(stack) -> dict[str, dict[str, Any]]:
    return stack["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def _flag(service: dict[str, Any], flag: str) -> str:
    command = service["command"]
    return command[command.index(flag) + 1]


def _buckets(services) -> set[str]:
    script = services["create-buckets"]["command"][0]
    return set(re.findall(r"store/([\w.-]+)", script))


class TestServices:
    def test_every_service_of_the_team_stack_is_there(self, services):
        assert set(services) >= SERVICES

    def test_every_dependency_names_a_service_of_the_stack(self, services):
        for name, service in services.items():
            for target in service.get("depends_on", {}):
                assert target in services, f"{name} depends on unknown {target}"

    def test_a_wait_for_healthy_has_a_healthcheck_to_wait_on(self, services):
        for name, service in services.items():
            for target, rule in service.get("depends_on", {}).items():
                if rule["condition"] == "service_healthy":
                    assert "healthcheck" in services[target], f"{name} -> {target}"

    def test_the_bucket_job_runs_once_and_the_others_wait_for_it(self, services):
        assert services["create-buckets"]["restart"] == "no"
        for name in ("mlflow", "worker"):
            rule = services[name]["depends_on"]["create-buckets"]
            assert rule == {"condition": "service_completed_successfully"}

    def test_the_uis_and_the_s3_api_are_published_on_their_usual_ports(self, services):
        published = {
            name: {int(p.split(":")[-1]) for p in service.get("ports", [])}
            for name, service in services.items()
        }
        assert published["prefect-server"] == {4200}
        assert published["mlflow"] == {5000}
        assert published["minio"] == {9000, 9001}
        assert not published["postgres"], "the database stays inside the stack"

    def test_the_driftloop_services_run_the_image_infra_builds(self, services):
        for name in DRIFTLOOP_IMAGE:
            build = services[name]["build"]
            assert (ROOT / "infra" / build["context"] / build["dockerfile"]).is_file()

    def test_the_image_installs_cpu_torch_and_the_postgres_driver(self):
        dockerfile = (INFRA / "Dockerfile").read_text()
        assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in dockerfile
        assert 'pip install ".[postgres]"' in dockerfile
        pyproject = (ROOT / "pyproject.toml").read_text()
        assert re.search(r'^postgres = \["psycopg\[binary\]', pyproject, re.M)


class TestDatabases:
    def test_prefect_uses_the_prefect_database_of_the_postgres_service(self, services):
        url = _env(services["prefect-server"])["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.path) == (
            "postgresql+asyncpg",
            "postgres",
            "/prefect",
        )

    def test_mlflow_uses_the_mlflow_database_of_the_postgres_service(self, services):
        parts = urlsplit(_flag(services["mlflow"], "--backend-store-uri"))
        assert (parts.scheme, parts.hostname, parts.path) == (
            "postgresql+psycopg",
            "postgres",
            "/mlflow",
        )

    def test_the_init_script_is_mounted_where_the_postgres_image_runs_it(
        self, services
    ):
        mounts = services["postgres"]["volumes"]
        assert (
            "./postgres/init-databases.sh:/docker-entrypoint-initdb.d/10-databases.sh:ro"
            in mounts
        )

    def test_the_init_script_makes_both_databases_and_can_run_again(
        self, postgres: Postgres
    ):
        env = {
            **os.environ,
            "PATH": f"{postgres.bindir}:{os.environ['PATH']}",
            "POSTGRES_USER": "postgres",
            "PGHOST": postgres.host,
            "PGPORT": str(postgres.port),
        }
        for _ in range(2):
            subprocess.run(
                ["sh", str(INFRA / "postgres" / "init-databases.sh")],
                env=env,
                check=True,
                capture_output=True,
            )
        rows = postgres.query(
            "postgres",
            "SELECT datname FROM pg_database WHERE datname IN ('prefect', 'mlflow')",
        )
        assert sorted(name for (name,) in rows) == ["mlflow", "prefect"]


class TestWiring:
    def test_the_worker_serves_the_work_pool_of_every_deployment(self, services):
        deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
        pools = {d["work_pool"]["name"] for d in deployments}
        assert pools == {_flag(services["worker"], "--pool")} == {"driftloop-local"}

    def test_the_worker_reaches_prefect_mlflow_and_s3_inside_the_stack(self, services):
        env = _env(services["worker"])
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["DRIFTLOOP_S3_ENDPOINT_URL"] == "http://minio:9000"

    def test_mlflow_accepts_the_host_name_the_worker_calls_it_by(self, services):
        from mlflow.server.security_utils import is_allowed_host_header

        allowed = _flag(services["mlflow"], "--allowed-hosts").split(",")
        host = urlsplit(_env(services["worker"])["MLFLOW_TRACKING_URI"]).netloc
        assert is_allowed_host_header(allowed, host)
        assert is_allowed_host_header(allowed, "localhost:5000")
        assert not is_allowed_host_header(allowed, "attacker.example:5000")

    def test_every_bucket_the_stack_uses_is_created(self, services):
        used = {
            urlsplit(_flag(services["mlflow"], "--artifacts-destination")).netloc,
            urlsplit(_env(services["worker"])["DRIFTLOOP_LAKE"]).netloc,
            urlsplit(_env(services["worker"])["DRIFTLOOP_SOURCE"]).netloc,
        }
        assert used <= _buckets(services)

    def test_mlflow_stores_artifacts_in_the_s3_service(self, services):
        assert _env(services["mlflow"])["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"

    def test_every_driftloop_variable_is_a_setting_or_a_deploy_time_variable(
        self, services
    ):
        known = _driftloop_settings() | set(
            re.findall(
                r"\{\{ \$(DRIFTLOOP_\w+) \}\}", (ROOT / "prefect.yaml").read_text()
            )
        )
        for name, service in services.items():
            unknown = {k for k in _env(service) if k.startswith("DRIFTLOOP_")} - known
            assert not unknown, f"{name} sets {unknown}, which nothing reads"

    def test_every_prefect_variable_changes_a_prefect_setting(
        self, services, monkeypatch
    ):
        from prefect.settings import Settings

        for service in services.values():
            for key, value in _env(service).items():
                if not key.startswith("PREFECT_"):
                    continue
                monkeypatch.delenv(key, raising=False)
                without = Settings().to_environment_variables(exclude_unset=False)
                monkeypatch.setenv(key, value)
                with_it = Settings().to_environment_variables(exclude_unset=False)
                assert with_it != without, f"Prefect ignores {key}={value}"


class TestNoTelemetry:
    def test_every_driftloop_service_turns_telemetry_off(self, services):
        for name in DRIFTLOOP_IMAGE:
            env = _env(services[name])
            assert env.get("DO_NOT_TRACK") == "true", name
            assert env.get("PREFECT_SERVER_ANALYTICS_ENABLED") == "false", name
            assert env.get("MLFLOW_DISABLE_TELEMETRY") == "true", name

    def test_the_image_turns_it_off_too_for_commands_run_in_it(self):
        dockerfile = (INFRA / "Dockerfile").read_text()
        for setting in (
            "DO_NOT_TRACK=true",
            "PREFECT_SERVER_ANALYTICS_ENABLED=false",
            "MLFLOW_DISABLE_TELEMETRY=true",
        ):
            assert setting in dockerfile


def _driftloop_settings() -> set[str]:
    names = set()
    for settings in (HomeSettings, S3Settings, DaskSettings):
        prefix = settings.model_config["env_prefix"]
        names |= {f"{prefix}{field}".upper() for field in settings.model_fields}
    return names


def test_docker_compose_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed: the compose file is checked by parsing")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        reason = (probe.stderr or probe.stdout).strip().splitlines()[0]
        pytest.skip(f"docker compose is not available here ({reason})")
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--profile", "dask", "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
