"""Planted PII reaches no output of ingestion or monitoring.

The simulator plants emails, phone numbers, cards, IBANs, SSNs, IPs and API keys in
prompts and answers and lists each one in `_simulation.json`. After a real ingest and
monitor run (Prefect API, MLflow store), none of them may appear in any MLflow
param, tag, metric name or artifact (the Evidently HTML among them), nor in the flow
runs' Prefect artifacts and logs. The curated dataset has the same check in
tests/flows/test_curate_flow.py; the scrubber's recall floor is enforced in
tests/tasks/test_pii.py.
"""

from __future__ import annotations

import json

import pytest

from driftloop import tracking
from driftloop.storage import LocalStore
from flows.ingest import IngestParams, ingest
from flows.monitor import MonitorParams, monitor
from tasks.lake import Lake
from tasks.simulate import simulate
from tests.conftest import mlflow_texts, prefect_texts

# The curate and monitor flows' tests simulate this traffic: embeddings are cache hits.
from tests.flows.test_curate_flow import CONFIG

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pii-leaks")
    simulate(root / "logs", CONFIG)
    lake = str(root / "lake")
    landed = ingest(
        IngestParams(source=str(root / "logs"), lake=lake), return_state=True
    )
    watched = monitor(
        MonitorParams(lake=lake, end="2026-11-05", reference_days=2), return_state=True
    )
    flow_runs = [landed.state_details.flow_run_id, watched.state_details.flow_run_id]
    planted = json.loads((root / "logs" / "_simulation.json").read_text())
    return {
        "root": root,
        "lake": lake,
        "flow_runs": flow_runs,
        "verdicts": watched.result(),
        "planted": planted["planted_pii"],
    }


def _runs_of(flow_run_ids) -> list:
    client = tracking.client()
    experiments = [
        client.get_experiment_by_name(name).experiment_id
        for name in ("driftloop-ingest", "driftloop-monitor")
    ]
    return [
        run
        for flow_run_id in flow_run_ids
        for run in client.search_runs(
            experiments, f"tags.`prefect.flow_run_id` = '{flow_run_id}'"
        )
    ]


def _leaks(texts: dict[str, str], planted: list[dict]) -> list[tuple[str, str]]:
    """Where a planted value appears, with its kind."""
    return [
        (where, item["kind"])
        for where, text in texts.items()
        for item in planted
        if item["value"] in text
    ]


def test_the_planted_pii_reached_the_monitored_windows(outputs):
    landed = Lake(LocalStore(outputs["lake"])).read_interactions()
    ids = set(landed["request_id"].to_pylist())
    assert {item["request_id"] for item in outputs["planted"]} & ids
    kinds = {item["kind"] for item in outputs["planted"]}
    assert len(kinds) >= 5, kinds


def test_no_planted_pii_in_mlflow_params_tags_metrics_or_artifacts(outputs):
    runs = _runs_of(outputs["flow_runs"])
    texts: dict[str, str] = {}
    for run in runs:
        texts |= mlflow_texts(run.info.run_id)
    assert any(name.endswith(".html") for name in texts), "Evidently HTML expected"
    assert len(runs) == 1 + len(outputs["verdicts"])  # ingest, a monitor run each
    assert _leaks(texts, outputs["planted"]) == []


def test_no_planted_pii_in_prefect_artifacts_or_logs(outputs):
    texts: dict[str, str] = {}
    for flow_run_id in outputs["flow_runs"]:
        texts |= prefect_texts(flow_run_id)
    assert any("drift" in text for text in texts.values())
    assert _leaks(texts, outputs["planted"]) == []
