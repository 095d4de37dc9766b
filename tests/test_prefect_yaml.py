"""Every deployment in prefect.yaml points at a flow that loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).parent.parent
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize(
    "deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS]
)
def test_a_deployment_entrypoint_loads_the_flow_it_names(deployment):
    flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
    assert flow.name == deployment["name"]


@pytest.mark.parametrize(
    "deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS]
)
def test_a_deployment_passes_only_parameters_its_flow_takes(deployment):
    flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
    assert set(deployment.get("parameters", {})) <= set(flow.parameters.properties)


def test_ingest_runs_every_fifteen_minutes_one_at_a_time():
    (ingest,) = [d for d in DEPLOYMENTS if d["name"] == "ingest"]
    assert ingest["schedules"] == [{"interval": 900}]
    assert ingest["concurrency_limit"]["limit"] == 1
