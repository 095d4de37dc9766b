"""The canary flow on simulated traffic: a worse canary goes, a better one is promoted.

Each scenario is its own use case with two cheap registry versions (a JSON file each,
no training): version 1 is champion and logs the simulator's usual label, version 2
is the canary and logs the label `driftloop promote --canary` gives it.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import date
from pathlib import Path

import mlflow
import orjson
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from driftloop import tracking
from driftloop.cli import app
from driftloop.errors import ConfigError
from driftloop.storage import LocalStore
from flows.canary import (
    EXPERIMENT,
    CanaryCheckParams,
    CanaryParams,
    canary,
    canary_check,
)
from tasks import registry
from tasks.ingest import ingest_objects, pending_objects
from tasks.lake import Lake
from tasks.simulate import SUPPORT, SimulationConfig, iter_interactions
from tasks.simulate_corpus import VERSIONS

pytestmark = pytest.mark.usefixtures("prefect_api")

RUN = uuid.uuid4().hex[:6]
DAY = date(2026, 11, 1)
WINDOW = {"window": "24h", "end": "2026-11-02"}
END = ("--window", "24h", "--end", "2026-11-02")
# Small enough for seconds, large enough for each verdict on the default settings.
SCENARIOS = {
    "worse": {"per_day": 1500, "canary_share": 0.3, "canary_failure_factor": 8.0},
    "better": {"per_day": 12000, "canary_share": 0.5, "canary_failure_factor": 0.1},
    "short": {"per_day": 150, "canary_share": 0.2},
}


def _use_case(scenario: str) -> str:
    return f"{scenario}-canary-{RUN}"


def _register(use_case: str, **tags: str) -> str:
    with tracking.run("driftloop-finetune", run_name="canary test") as run:
        mlflow.log_dict({"weights": "none"}, "files/info.json")
        version = registry.register(
            use_case, f"{run.info.artifact_uri}/files", run.info.run_id, "adapter", tags
        )
    return version.version


def _champion_and_canary(use_case: str, share: float) -> str:
    """Register a champion that logs the simulator's label and a canary; its label."""
    champion = _register(use_case, serving_label=VERSIONS[SUPPORT][0])
    registry.set_alias(use_case, registry.CHAMPION, champion)
    registry.canary(use_case, _register(use_case), 100 * share)
    return registry.get(use_case, registry.CANARY).tags["serving_label"]


def _write_logs(folder: Path, use_case: str, config: SimulationConfig) -> None:
    """Write a day of simulated support traffic as the logs of `use_case`."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{use_case}.jsonl").open("wb") as file:
        for record in iter_interactions(config):
            line = orjson.dumps({**record, "model": use_case})
            file.write(line + b"\n")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("canary")
    for seed, (scenario, traffic) in enumerate(SCENARIOS.items()):
        use_case = _use_case(scenario)
        label = _champion_and_canary(use_case, traffic["canary_share"])
        config = SimulationConfig(
            days=1, seed=seed, start=DAY, canary_version=label, **traffic
        )
        _write_logs(root / "logs", use_case, config)
    source, lake = LocalStore(root / "logs"), Lake(LocalStore(root / "lake"))
    ingest_objects(source, lake, pending_objects(source, lake))
    return str(root / "lake")


def _judge(lake: str, scenario: str, act: bool = True) -> dict:
    return canary(
        CanaryParams(lake=lake, use_case=_use_case(scenario), act=act, **WINDOW)
    )


@pytest.fixture(scope="module")
def worse_unacted(lake: str) -> dict:
    return _judge(lake, "worse", act=False)


@pytest.fixture(scope="module")
def worse(lake: str, worse_unacted: dict) -> dict:
    return _judge(lake, "worse")


@pytest.fixture(scope="module")
def better(lake: str) -> dict:
    return _judge(lake, "better")


@pytest.fixture(scope="module")
def short(lake: str) -> dict:
    return _judge(lake, "short")


def _aliases(scenario: str) -> dict[str, str]:
    return {
        alias: version.version
        for alias in registry.ALIASES
        if (version := registry.find(_use_case(scenario), alias)) is not None
    }


class TestVerdicts:
    def test_a_worse_canary_is_rolled_back_and_the_champion_stays(self, worse):
        assert worse["decision"] == "rollback", worse["reasons"]
        assert worse["acted"] is True
        assert _aliases("worse") == {"champion": "1"}
        assert any(
            r.startswith("task_success: difference -")
            and r.endswith("wholly beyond the tolerance of -3.0 points")
            for r in worse["reasons"]
        )

    def test_a_withdrawn_canary_keeps_its_decision_as_tags(self, worse):
        tags = registry.get(_use_case("worse"), "2").tags
        assert tags["canary_decision"] == "rollback"
        assert tags["canary_run_id"] == worse["mlflow_run_id"]
        assert "canary_share" not in tags

    def test_a_better_canary_becomes_champion_with_the_old_one_kept(self, better):
        assert better["decision"] == "promote", better["reasons"]
        assert better["aliases"] == {"champion": "2", "previous-champion": "1"}
        assert _aliases("better") == {"champion": "2", "previous-champion": "1"}
        assert {row["status"] for row in better["metrics"]} == {"non-inferior"}

    def test_too_little_traffic_waits_naming_the_minimum_and_moves_nothing(self, short):
        assert short["decision"] == "wait"
        assert short["acted"] is False
        assert _aliases("short") == {"champion": "1", "canary": "2"}
        n = short["interactions"]["canary"]
        assert 10 < n < 100
        assert (
            f"correction_rate: the canary has {n} interactions, fewer than the 100 a "
            "pass needs (DRIFTLOOP_CANARY_MIN_SAMPLES)" in short["reasons"]
        )

    def test_without_act_the_verdict_is_reported_and_the_aliases_stay(
        self, worse_unacted
    ):
        assert (worse_unacted["decision"], worse_unacted["acted"]) == (
            "rollback",
            False,
        )
        run = mlflow.get_run(worse_unacted["mlflow_run_id"])
        assert (run.data.tags["decision"], run.data.tags["acted"]) == (
            "rollback",
            "false",
        )

    def test_the_arms_are_found_by_their_serving_labels(self, better):
        assert better["champion_label"] == VERSIONS[SUPPORT][0]
        assert better["canary_label"] == f"driftloop-{_use_case('better')}/2"
        assert better["interactions"]["other_labels"] == {}
        assert 0.45 < better["canary_share"] < 0.55


class TestEvidence:
    def test_the_decision_is_an_mlflow_run_with_figures_per_metric_and_arm(self, worse):
        run = mlflow.get_run(worse["mlflow_run_id"])
        experiment = mlflow.get_experiment(run.info.experiment_id)
        assert experiment.name == EXPERIMENT
        assert run.data.tags["decision"] == "rollback"
        assert run.data.params["min_samples"] == "100"
        metrics = run.data.metrics
        assert metrics["task_success.canary"] < metrics["task_success.champion"]
        assert metrics["task_success.high"] < -0.03
        assert metrics["interactions.canary"] == worse["interactions"]["canary"]
        artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
        assert {"canary.json", "decision.json"} <= artifacts

    def test_the_evidence_table_is_a_prefect_artifact(self, worse):
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        key = f"canary-{_use_case('worse')}"
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
        rows = [row for a in artifacts for row in json.loads(a.data)]
        assert {row["metric"] for row in rows} >= {"task_success", "latency_p50"}
        assert any(a.description.startswith("rollback: canary v2") for a in artifacts)


class TestRefusals:
    def test_without_a_canary_nothing_is_judged_and_the_way_to_start_one_is_said(
        self, lake
    ):
        use_case = f"lonely-{RUN}"
        registry.set_alias(use_case, registry.CHAMPION, _register(use_case))
        result = canary(CanaryParams(lake=lake, use_case=use_case, **WINDOW))
        assert result["decision"] == "no canary"
        assert result["reasons"] == [
            f"driftloop-{use_case} has no version with alias canary, so there is "
            "nothing to judge; start one with `driftloop promote VERSION --model "
            f"{use_case} --canary 10`"
        ]
        runs = mlflow.search_runs(
            experiment_names=[EXPERIMENT],
            filter_string=f"tags.use_case = '{use_case}'",
        )
        assert runs.empty

    def test_a_canary_that_is_also_the_champion_is_refused(self, lake):
        use_case = f"same-{RUN}"
        version = _register(use_case)
        registry.set_alias(use_case, registry.CHAMPION, version)
        registry.set_alias(use_case, registry.CANARY, version)
        with pytest.raises(ConfigError, match="canary and champion both point at"):
            canary(CanaryParams(lake=lake, use_case=use_case, **WINDOW))


class TestLabels:
    def test_a_canary_is_tagged_with_the_label_its_answers_must_log(self):
        use_case = f"label-{RUN}"
        registry.canary(use_case, _register(use_case), 10)
        tags = registry.get(use_case, registry.CANARY).tags
        assert tags["serving_label"] == f"driftloop-{use_case}/1"

    def test_a_label_set_by_hand_is_kept_when_the_canary_starts(self):
        use_case = f"own-label-{RUN}"
        registry.canary(use_case, _register(use_case, serving_label="v7-blue"), 10)
        tags = registry.get(use_case, registry.CANARY).tags
        assert tags["serving_label"] == "v7-blue"


class TestCommand:
    def test_the_command_prints_the_evidence_and_why_it_waits(self, lake, short):
        out = CliRunner().invoke(
            app,
            ["canary", "--model", _use_case("short"), "--lake", lake, "--no-act", *END],
            catch_exceptions=False,
        )
        assert out.exit_code == 0, out.output
        assert "correction_rate" in out.output
        assert "wait" in out.output
        assert "DRIFTLOOP_CANARY_MIN_SAMPLES" in out.output

    def test_the_command_without_a_canary_says_how_to_start_one(self, lake):
        use_case = f"nobody-{RUN}"
        out = CliRunner().invoke(
            app,
            ["canary", "--model", use_case, "--lake", lake, "--json", *END],
            catch_exceptions=False,
        )
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["decision"] == "no canary"


class TestScheduledCheck:
    def test_it_judges_every_use_case_with_a_canary_and_names_a_broken_one(self, lake):
        broken = f"no-champion-{RUN}"
        registry.canary(broken, _register(broken), 10)
        started = int(time.time() * 1000)
        with pytest.raises(ConfigError, match=f"{broken}: .*no version 'champion'"):
            canary_check(CanaryCheckParams(lake=lake, act=False, **WINDOW))
        # The broken use case did not keep the others from being judged.
        experiment = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
        judged = MlflowClient().search_runs(
            [experiment],
            f"tags.use_case = '{_use_case('short')}' "
            f"and attributes.start_time >= {started}",
        )
        assert [run.data.tags["decision"] for run in judged] == ["wait"]
