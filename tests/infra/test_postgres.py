"""MLflow and Prefect on a real PostgreSQL, the backends of the team stack in infra/."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest

from driftloop import tracking
from tasks import registry

from .conftest import Postgres, _free_port

WRITERS, METRICS_EACH = 4, 200


@pytest.fixture(scope="module")
def mlflow_store(postgres: Postgres) -> str:
    return postgres.create_database("mlflow")


@pytest.fixture
def on_postgres(mlflow_store: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point driftloop's MLflow at the Postgres store for one test, then back."""
    before = tracking.tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    yield mlflow_store
    # The environment comes back with monkeypatch; MLflow's process-wide URI does not.
    mlflow.set_tracking_uri(before)


class TestMlflowOnPostgres:
    def test_a_stage_run_is_stored_in_postgres_and_ends_finished(
        self, on_postgres, postgres
    ):
        with tracking.run("driftloop-postgres", run_name="stage") as run:
            tracking.log_report({"rows": 3, "windows": ["a", "b"]})
        stored = tracking.client().get_run(run.info.run_id)
        assert stored.info.status == "FINISHED"
        assert stored.data.metrics == {"rows": 3.0, "windows": 2.0}
        rows = postgres.query(
            "mlflow", "SELECT status FROM runs WHERE run_uuid = %s", run.info.run_id
        )
        assert rows == [("FINISHED",)]

    def test_a_failing_stage_ends_its_run_failed_in_postgres(self, on_postgres):
        with (
            pytest.raises(ValueError, match="bad window"),
            tracking.run("driftloop-postgres", run_name="fails") as run,
        ):
            raise ValueError("bad window")
        assert tracking.client().get_run(run.info.run_id).info.status == "FAILED"

    def test_register_alias_promote_and_rollback_work_on_postgres(
        self, on_postgres, postgres
    ):
        use_case = "postgres-case"
        base, adapter = _version(use_case, "base"), _version(use_case, "adapter")
        registry.set_alias(use_case, registry.CHAMPION, base)
        registry.set_alias(use_case, registry.CHALLENGER, adapter)

        moved = registry.promote(use_case, adapter)

        assert moved == {"champion": adapter, "previous-champion": base}
        assert registry.get(use_case, registry.CHAMPION).version == adapter
        assert registry.find(use_case, registry.CHALLENGER) is None
        aliases = postgres.query(
            "mlflow",
            "SELECT alias, version FROM registered_model_aliases "
            "WHERE name = %s ORDER BY alias",
            registry.model_name(use_case),
        )
        assert aliases == [("champion", int(adapter)), ("previous-champion", int(base))]
        assert registry.rollback(use_case)["champion"] == base

    def test_concurrent_writer_processes_lose_no_metric(self, on_postgres):
        client = tracking.client()
        with tracking.run("driftloop-postgres", run_name="concurrent") as run:
            writers = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        _WRITER,
                        on_postgres,
                        run.info.run_id,
                        str(k),
                    ],
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for k in range(WRITERS)
            ]
            failed = [w.stderr.read() for w in writers if w.wait(timeout=120) != 0]
        assert failed == []
        for k in range(WRITERS):
            history = client.get_metric_history(run.info.run_id, f"writer_{k}")
            assert sorted(m.step for m in history) == list(range(METRICS_EACH))


# One request and one transaction per metric: the pattern SQLite locks up under.
_WRITER = textwrap.dedent(
    f"""
    import sys
    from mlflow.tracking import MlflowClient

    uri, run_id, writer = sys.argv[1:]
    client = MlflowClient(tracking_uri=uri)
    for step in range({METRICS_EACH}):
        client.log_metric(run_id, f"writer_{{writer}}", step * 0.5, step=step)
    """
)


def _version(use_case: str, kind: str) -> str:
    with tracking.run("driftloop-finetune", run_name=kind) as run:
        mlflow.log_dict({"kind": kind}, "files/info.json")
        found = registry.register(
            use_case, f"{run.info.artifact_uri}/files", run.info.run_id, kind, {}
        )
    return found.version


@pytest.fixture(scope="module")
def prefect_server(postgres: Postgres, tmp_path_factory) -> Iterator[str]:
    """`prefect server start` on a Postgres database; yields its API URL."""
    database = "prefect"
    postgres.create_database(database)
    port, home = _free_port(), tmp_path_factory.mktemp("prefect-server")
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres.url(
            database, driver="postgresql+asyncpg"
        ),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [_prefect(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(api, server, home / "server.log")
        yield api
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _prefect() -> str:
    return str(Path(sys.executable).parent / "prefect")


def _wait_healthy(api: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(
                f"prefect server exited {server.returncode}:\n{log.read_text()}"
            )
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy within 90 s:\n{log.read_text()}")


_FLOW = textwrap.dedent(
    """
    from prefect import flow, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow(name="driftloop-postgres-check")
    def check(x: int) -> int:
        return double(x) + 1

    state = check(20, return_state=True)
    print(state.state_details.flow_run_id, state.result())
    """
)


class TestPrefectOnPostgres:
    def test_a_flow_run_against_the_server_is_read_back_completed(
        self, prefect_server, postgres, tmp_path
    ):
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_server,
            "PREFECT_HOME": str(tmp_path),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        done = subprocess.run(
            [sys.executable, "-c", _FLOW],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        flow_run_id, result = done.stdout.split()[-2:]
        assert result == "41"

        read = httpx.get(f"{prefect_server}/flow_runs/{flow_run_id}", timeout=10)
        assert read.json()["state"]["type"] == "COMPLETED"
        rows = postgres.query(
            "prefect",
            "SELECT state_type::text FROM flow_run WHERE id = %s",
            flow_run_id,
        )
        assert rows == [("COMPLETED",)]
