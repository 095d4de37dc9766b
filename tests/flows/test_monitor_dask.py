"""The monitor flow on a real Dask cluster: the same verdicts as in the flow's process."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import date

import mlflow
import pytest
from distributed import LocalCluster

from driftloop.errors import ConfigError
from driftloop.storage import LocalStore
from flows.monitor import MonitorParams, monitor
from tasks.ingest import ingest_objects, pending_objects
from tasks.lake import Lake
from tasks.simulate import SimulationConfig, simulate

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> MonitorParams:
    """Two daily windows of a small lake; the second has a new topic at 30%."""
    root = tmp_path_factory.mktemp("monitor-dask")
    config = SimulationConfig(
        days=3,
        per_day=120,
        seed=5,
        scenario="new-topic",
        drift_day=2,
        drift_share=0.3,
        start=date(2026, 11, 1),
    )
    simulate(root / "logs", config)
    source, lake = LocalStore(root / "logs"), Lake(LocalStore(root / "lake"))
    ingest_objects(source, lake, pending_objects(source, lake))
    return MonitorParams(
        lake=str(root / "lake"), end="2026-11-04", windows=2, reference_days=1
    )


@pytest.fixture(scope="module")
def in_process(params: MonitorParams) -> list[dict]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DRIFTLOOP_DASK_ADDRESS", raising=False)
        return monitor(params)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A Dask scheduler and one worker of two threads, reached over TCP."""
    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        protocol="tcp",
        dashboard_address=None,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def on_scheduler(params: MonitorParams, cluster: LocalCluster, in_process) -> list:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRIFTLOOP_DASK_ADDRESS", cluster.scheduler_address)
        return monitor(params)


@pytest.fixture(scope="module")
def on_local_cluster(params: MonitorParams, in_process) -> list[dict]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRIFTLOOP_DASK_ADDRESS", "local")
        return monitor(params)


def _verdicts(results: list[dict]) -> list[tuple]:
    return [
        (r["window"], r["drift"], r["status"], r["severity"], r["reasons"])
        for r in results
    ]


def _p_values(results: list[dict]) -> list[dict]:
    return [
        {name: test["p_value"] for name, test in r["embedding"]["tests"].items()}
        | {"combined": r["embedding"]["p_value"]}
        for r in results
    ]


def test_the_in_process_run_sees_drift_on_the_launch_day_only(in_process):
    assert [r["status"] for r in in_process] == ["no drift", "drift"]


def test_a_run_on_a_dask_scheduler_reaches_the_same_verdicts(in_process, on_scheduler):
    assert _verdicts(on_scheduler) == _verdicts(in_process)


def test_a_run_on_a_dask_scheduler_gives_the_same_p_values(in_process, on_scheduler):
    assert _p_values(on_scheduler) == _p_values(in_process)


def test_the_comparisons_ran_as_tasks_on_the_dask_workers(on_scheduler, cluster):
    # Counted on entering each state: two comparisons reached memory, i.e. finished.
    prefix = cluster.scheduler.task_prefixes["compare"]
    assert prefix.state_counts["memory"] == len(on_scheduler) == 2


def test_each_comparison_on_dask_is_a_finished_mlflow_run_of_its_flow_run(
    on_scheduler,
):
    runs = [mlflow.get_run(r["mlflow_run_id"]) for r in on_scheduler]
    assert {run.info.status for run in runs} == {"FINISHED"}
    flow_runs = {run.data.tags.get("prefect.flow_run_id") for run in runs}
    assert len(flow_runs) == 1 and None not in flow_runs
    assert runs[1].data.tags["status"] == "drift"
    assert runs[1].data.metrics["embedding.p_value"] < 0.01


def test_a_local_cluster_started_for_the_run_gives_the_same_results(
    in_process, on_local_cluster
):
    assert _verdicts(on_local_cluster) == _verdicts(in_process)
    assert _p_values(on_local_cluster) == _p_values(in_process)


def test_an_address_where_no_scheduler_answers_is_refused_with_the_fix(params):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRIFTLOOP_DASK_ADDRESS", dead)
        patch.setenv("DRIFTLOOP_DASK_CONNECT_TIMEOUT_S", "1")
        with pytest.raises(ConfigError, match="no Dask scheduler answered") as info:
            monitor(params)
    assert dead in str(info.value)
    assert "start the scheduler or fix the address" in str(info.value)
