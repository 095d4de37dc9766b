"""Real components for the whole suite: a Prefect API, an S3 endpoint, an MLflow store."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before Prefect or MLflow is imported anywhere: no network, quiet logs.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@pytest.fixture(scope="session", autouse=True)
def driftloop_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep every test's local state (lake default, MLflow store) out of the checkout."""
    home = tmp_path_factory.mktemp("driftloop-home")
    os.environ["DRIFTLOOP_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    yield home


@pytest.fixture(scope="session")
def prefect_api(driftloop_home: Path) -> Iterator[None]:
    """A real Prefect API on a temporary database, started once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 endpoint over HTTP on 127.0.0.1; boto3 reaches it via AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(
        ip_address="127.0.0.1", port=_free_port(), verbose=False
    )
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


_AWS_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
)


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unavailable(reason: str) -> None:
    """Skip a test whose system prerequisite is missing; fail instead under CI.

    `.ci/run` installs Chromium and PostgreSQL and sets DRIFTLOOP_TEST_STRICT, so there
    a missing prerequisite is a red build, never a quietly skipped guarantee.
    """
    if os.environ.get("DRIFTLOOP_TEST_STRICT"):
        pytest.fail(f"{reason} (DRIFTLOOP_TEST_STRICT is set)", pytrace=False)
    pytest.skip(reason)


def wait_for_running_run(experiment: str, process: subprocess.Popen) -> str:
    """The id of the run `process` opened in `experiment`, once it is RUNNING."""
    from driftloop import tracking

    client = tracking.client()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            runs = client.search_runs(
                [found.experiment_id],
                f"attributes.status = 'RUNNING' and tags.`driftloop.pid` = "
                f"'{process.pid}'",
            )
            if runs:
                return runs[0].info.run_id
        assert process.poll() is None, process.stderr.read()[-2000:]
        time.sleep(0.5)
    pytest.fail(f"no RUNNING run of pid {process.pid} in {experiment}")


def mlflow_texts(run_id: str) -> dict[str, str]:
    """Everything a run shows as text: params, tags, metric names, every artifact."""
    import json

    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(run_id)
    texts = {
        f"{run_id}/params": json.dumps(run.data.params),
        f"{run_id}/tags": json.dumps(run.data.tags),
        f"{run_id}/metric names": json.dumps(sorted(run.data.metrics)),
    }
    folder = Path(client.download_artifacts(run_id, ""))
    for path in folder.rglob("*"):
        if path.is_file():
            texts[f"{run_id}/{path.relative_to(folder)}"] = path.read_text(
                encoding="utf-8", errors="replace"
            )
    return texts


def prefect_texts(flow_run_id) -> dict[str, str]:
    """A flow run's logs and its artifacts (key, description, data) as text."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async def read():
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )
            return logs, artifacts

    logs, artifacts = asyncio.run(read())
    return {
        f"prefect/{flow_run_id}/logs": "\n".join(log.message for log in logs),
        f"prefect/{flow_run_id}/artifacts": "\n".join(
            f"{a.key} {a.description} {a.data}" for a in artifacts
        ),
    }
