"""MLflow under faults: no run left RUNNING, no metric lost, a clear word when down.

Every case runs real processes against a real store: the suite's SQLite store, or an
`mlflow server` started here on a free port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from driftloop import tracking
from driftloop.errors import TrackingError
from tests.conftest import _free_port, wait_for_running_run

WRITERS, METRICS_EACH = 4, 200


def _python(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or os.environ.copy(),
    )


# A driftloop stage that opens its run, says which, and works until it is stopped.
_STAGE = """
    import sys, time
    from driftloop import tracking
    with tracking.run(sys.argv[1], run_name="stage") as run:
        print(run.info.run_id, flush=True)
        time.sleep(120)
"""


def _status(run_id: str) -> str:
    return tracking.client().get_run(run_id).info.status


class TestNoRunLeftRunning:
    def test_a_sigkilled_stage_is_marked_killed_by_the_next_run_of_its_experiment(
        self,
    ):
        experiment = f"reliability-kill-{uuid.uuid4().hex[:6]}"
        stage = _python(_STAGE, experiment)
        run_id = stage.stdout.readline().strip()
        stage.send_signal(signal.SIGKILL)
        stage.wait(timeout=30)
        assert _status(run_id) == "RUNNING"  # nothing could end it
        with tracking.run(experiment, run_name="next"):
            pass
        assert _status(run_id) == "KILLED"
        ended = tracking.client().get_run(run_id).data.tags["driftloop.ended_by"]
        assert ended == "its process was gone"

    def test_a_run_whose_process_still_works_is_left_running(self):
        experiment = f"reliability-alive-{uuid.uuid4().hex[:6]}"
        stage = _python(_STAGE, experiment)
        try:
            run_id = stage.stdout.readline().strip()
            with tracking.run(experiment, run_name="next"):
                pass
            assert _status(run_id) == "RUNNING"
        finally:
            stage.kill()
            stage.wait(timeout=30)

    def test_sigterm_to_a_driftloop_command_ends_its_run_killed(self, tmp_path):
        # `driftloop ingest` over a log that is still being written: a FIFO whose
        # writer holds it open until the command was told to stop.
        source = tmp_path / "logs"
        source.mkdir()
        fifo = source / "still-writing.jsonl"
        os.mkfifo(fifo)
        stop = threading.Event()

        def write_slowly() -> None:
            with fifo.open("w") as log:
                log.write('{"request_id": "r1", "timestamp": 1, "model": "m"}\n')
                log.flush()
                stop.wait(120)

        writer = threading.Thread(target=write_slowly, daemon=True)
        writer.start()
        command = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "driftloop"),
                "ingest",
                "--source",
                str(source),
                "--lake",
                str(tmp_path / "lake"),
            ],
            env={**os.environ, "DRIFTLOOP_HOME": str(tmp_path / "home")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            run_id = wait_for_running_run("driftloop-ingest", command)
            command.send_signal(signal.SIGTERM)
            time.sleep(1)
        finally:
            stop.set()  # the object being read ends; the command unwinds
        command.wait(timeout=60)
        assert command.returncode == 128 + signal.SIGTERM
        assert _status(run_id) == "KILLED"
        assert not (tmp_path / "lake" / "_manifest").exists()  # nothing committed


# One process per writer, each its own driftloop run in one new experiment (so the
# experiment's creation races too), one request per metric.
_WRITER = f"""
    import sys
    import mlflow
    from driftloop import tracking
    experiment, writer = sys.argv[1:]
    with tracking.run(experiment, run_name=f"writer-{{writer}}"):
        for step in range({METRICS_EACH}):
            mlflow.log_metric("value", step * 0.5, step=step)
"""


def test_concurrent_runs_on_the_sqlite_store_lose_no_metric():
    experiment = f"reliability-writers-{uuid.uuid4().hex[:6]}"
    writers = [_python(_WRITER, experiment, str(k)) for k in range(WRITERS)]
    failed = [w.stderr.read()[-2000:] for w in writers if w.wait(timeout=300) != 0]
    assert failed == []
    client = tracking.client()
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [
        f"writer-{k}" for k in range(WRITERS)
    ]
    for found_run in runs:
        assert found_run.info.status == "FINISHED"
        history = client.get_metric_history(found_run.info.run_id, "value")
        assert sorted(m.step for m in history) == list(range(METRICS_EACH))


class TestServerUnreachable:
    def test_a_server_that_comes_up_late_is_waited_for_and_the_run_lands(
        self, tmp_path
    ):
        port = _free_port()
        uri = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "8",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        }
        stage = _python(
            """
            import mlflow
            from driftloop import tracking
            with tracking.run("reliability-late-server") as run:
                mlflow.log_metric("rows", 7)
            print(run.info.run_id, flush=True)
            """,
            env=env,
        )
        time.sleep(4)  # the stage is retrying against nothing
        assert stage.poll() is None
        server = _mlflow_server(tmp_path, port)
        try:
            out, err = stage.communicate(timeout=240)
            assert stage.returncode == 0, err[-2000:]
            found = MlflowClient(tracking_uri=uri).get_run(out.split()[-1])
            assert found.info.status == "FINISHED"
            assert found.data.metrics == {"rows": 7.0}
        finally:
            server.terminate()
            server.wait(timeout=60)

    def test_a_server_that_stays_down_is_a_clear_refusal_before_any_work(
        self, monkeypatch
    ):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        worked = []
        try:
            with (
                pytest.raises(TrackingError, match=r"did not answer .*driftloop up"),
                tracking.run("reliability-down"),
            ):
                worked.append(True)
        finally:
            import mlflow

            mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        assert worked == []


def _mlflow_server(home: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{home / 'server.db'}",
            "--default-artifact-root",
            (home / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return server
