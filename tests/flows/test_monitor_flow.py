"""The monitor flow on simulated traffic: drift caught on the right day, not before."""

from __future__ import annotations

import json
from datetime import date

import mlflow
import pytest

from driftloop.storage import LocalStore
from flows.monitor import MonitorParams, monitor
from tasks.ingest import ingest_objects, pending_objects
from tasks.lake import Lake
from tasks.simulate import SimulationConfig, simulate

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    config = SimulationConfig(
        days=4,
        per_day=300,
        seed=3,
        scenario="new-topic",
        drift_day=3,
        drift_share=0.3,
        start=date(2026, 11, 1),
    )
    simulate(root / "logs", config)
    source, lake = LocalStore(root / "logs"), Lake(LocalStore(root / "lake"))
    ingest_objects(source, lake, pending_objects(source, lake))
    return str(root / "lake")


@pytest.fixture(scope="module")
def results(lake):
    params = MonitorParams(lake=lake, end="2026-11-05", windows=2, reference_days=2)
    return monitor(params)


def test_the_window_before_the_launch_shows_no_drift_and_the_launch_day_does(results):
    before, launch = results
    assert before["window"].startswith("2026-11-03")
    assert (before["drift"], before["status"]) == (False, "no drift")
    assert launch["window"].startswith("2026-11-04")
    assert (launch["drift"], launch["status"]) == (True, "drift")
    assert launch["embedding"]["p_value"] < 0.01
    assert set(launch["embedding"]["tests"]) == {
        "prompt_mmd",
        "prompt_novelty",
        "response_mmd",
    }


def test_the_launch_topic_is_reported_as_new_with_scrubbed_examples(results):
    topics = results[1]["new_topics"]
    assert topics, "the product launch should be an emerging topic"
    assert "aurora" in topics[0]["keywords"] or "hub" in topics[0]["keywords"]
    assert topics[0]["share"] > 0.1
    assert all("@" not in example for example in topics[0]["examples"])


def test_the_output_states_and_justifies_its_sample_and_embedder(results):
    launch = results[1]
    assert launch["sample"]["current"] == launch["embedding"]["sample_size"] > 0
    assert "false-alarm rate" in launch["sample"]["why"]
    assert launch["embedding"]["embedder"].startswith("all-MiniLM-L6-v2@")
    assert set(launch["evidently"]["embeddings"]["prompt"]) >= {
        "model",
        "distance",
        "ratio",
        "mmd",
    }


def test_each_window_is_an_mlflow_run_with_metrics_and_artifacts(results):
    run = mlflow.get_run(results[1]["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["status"] == "drift"
    assert run.data.metrics["embedding.p_value"] < 0.01
    assert run.data.metrics["embedding.prompt_novelty.p_value"] < 0.01 / 3
    assert run.data.metrics["signal.volume"] == 300
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"summary.json", "topics.json", "evidently-drift.html"} <= artifacts


def test_signals_are_split_by_model_version(results):
    assert results[1]["signals_by_version"]
    assert sum(v["volume"] for v in results[1]["signals_by_version"].values()) == 300


def test_a_window_without_traffic_says_not_enough_data_and_names_the_minimum(lake):
    (result,) = monitor(
        MonitorParams(lake=lake, model="support-assistant", end="2026-12-01")
    )
    assert result["status"] == "not enough data"
    assert result["drift"] is False
    assert "at least 100 are needed" in result["reasons"][0]


def test_the_summary_is_json_serialisable(results):
    json.dumps(results)


def _wait_for(read, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = read()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_drift_emits_one_prefect_event_with_the_verdict_and_the_mlflow_run(results):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter
    from prefect.events.worker import EventsWorker

    from flows.monitor import EVENT

    EventsWorker.drain_all()
    wanted = results[1]["mlflow_run_id"]

    def ours(client):
        # Other flows' tests emit drift events too; wait for this run's to arrive.
        found = client.read_events(
            EventFilter(event=EventNameFilter(name=[EVENT])), limit=50
        ).events
        return found if wanted in {e.payload["mlflow_run_id"] for e in found} else []

    with get_client(sync_client=True) as client:
        events = _wait_for(lambda: ours(client))
    runs = {e.payload["mlflow_run_id"] for e in events}
    assert results[1]["mlflow_run_id"] in runs
    assert results[0]["mlflow_run_id"] not in runs
    (event,) = [
        e for e in events if e.payload["mlflow_run_id"] == results[1]["mlflow_run_id"]
    ]
    assert event.payload["window"] == results[1]["window"]
    assert event.payload["severity"] in {"medium", "high"}
    assert event.resource.id == "driftloop.model.support-assistant"


def test_each_comparison_publishes_a_drift_summary_artifact(results):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["drift-summary"])
            )
        )
    texts = [a.data for a in artifacts]
    assert any(results[1]["window"] in t and "DRIFT" in t for t in texts)


def test_two_log_folders_can_be_compared_ad_hoc_without_a_lake(tmp_path):
    config = SimulationConfig(days=2, per_day=150, seed=4, malformed=False)
    simulate(tmp_path / "logs", config)
    reference = tmp_path / "logs" / "support-assistant" / "2026-11-01"
    current = tmp_path / "logs" / "support-assistant" / "2026-11-02"
    (result,) = monitor(
        MonitorParams(reference_path=str(reference), current_path=str(current))
    )
    assert result["interactions"] == {"current": 150, "reference": 150}
    assert result["sample"]["current"] == result["embedding"]["sample_size"] == 150
    assert 0 < result["embedding"]["p_value"] <= 1
    assert result["window"] == str(current)


def test_ad_hoc_monitoring_needs_both_paths(tmp_path):
    from driftloop.errors import ConfigError

    with pytest.raises(
        ConfigError, match="needs both --reference PATH and --current PATH"
    ):
        monitor(MonitorParams(current_path=str(tmp_path)))
