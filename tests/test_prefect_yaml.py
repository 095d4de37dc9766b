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


def _deployment(name: str) -> dict:
    (found,) = [d for d in DEPLOYMENTS if d["name"] == name]
    return found


def test_monitor_runs_hourly_and_a_late_run_does_not_pile_up():
    monitor = _deployment("monitor")
    assert monitor["schedules"] == [{"cron": "5 * * * *"}]
    assert monitor["concurrency_limit"] == {
        "limit": 1,
        "collision_strategy": "CANCEL_NEW",
    }


class TestImproveTrigger:
    """One drift event starts one improve run of its use case, debounced."""

    @pytest.fixture
    def trigger(self):
        from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

        (raw,) = _deployment("improve")["triggers"]
        return raw, DeploymentEventTrigger(**raw)

    def test_it_is_a_valid_prefect_event_trigger_on_drift_events(self, trigger):
        _, parsed = trigger
        assert parsed.expect == {"driftloop.drift.detected"}
        assert parsed.posture == "Reactive"
        assert parsed.threshold == 1
        assert parsed.match.model_dump()["prefect.resource.id"] == "driftloop.model.*"

    def test_it_counts_each_use_case_apart_and_fires_once_per_six_hours(self, trigger):
        _, parsed = trigger
        assert parsed.for_each == {"prefect.resource.id"}
        assert parsed.within.total_seconds() == 6 * 3600

    def test_the_event_fills_the_use_case_and_the_monitor_run(self, trigger):
        raw, _ = trigger
        params = raw["parameters"]["params"]
        assert params["use_case"] == "{{ event.payload.model }}"
        assert params["monitor_run"] == "{{ event.payload.mlflow_run_id }}"

    def test_one_improve_run_at_a_time_and_the_next_one_waits(self):
        assert _deployment("improve")["concurrency_limit"] == {
            "limit": 1,
            "collision_strategy": "ENQUEUE",
        }


def test_evaluate_runs_only_by_hand():
    evaluate = _deployment("evaluate")
    assert "schedules" not in evaluate
    assert "triggers" not in evaluate


def test_the_canary_check_runs_hourly_for_every_use_case():
    check = _deployment("canary-check")
    assert check["schedules"] == [{"cron": "35 * * * *"}]
    assert check["entrypoint"] == "flows/canary.py:canary_check"
