"""Fine-tune, evaluate, promote, roll back: real training of a small model, real gate.

The launch scenario: the base model is pre-trained on traffic before the launch, the
dataset of the launch day holds the new topic, and the adapter trained on it must win
on the drift slice and hold elsewhere. A poisoned copy of that dataset (answers
shuffled across prompts) must be rejected by the same gate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from driftloop.storage import LocalStore
from flows.curate import CurateParams, curate
from flows.evaluate import EvaluateParams, evaluate
from flows.finetune import FinetuneParams, finetune
from flows.monitor import MonitorParams, monitor
from tasks import registry
from tasks.datasets import DatasetStore, content_version
from tasks.ingest import ingest_objects, pending_objects
from tasks.lake import Lake
from tasks.simulate import SimulationConfig, simulate
from tests.conftest import wait_for_running_run
from tests.evals.test_judge import serve_fake

pytestmark = pytest.mark.usefixtures("prefect_api")

USE_CASE = "support-assistant"
# Small enough for 2 CPU cores in a test, large enough to learn the launch topic.
TINY = {
    "DRIFTLOOP_BASE_HIDDEN_SIZE": "96",
    "DRIFTLOOP_BASE_LAYERS": "2",
    "DRIFTLOOP_BASE_HEADS": "2",
    "DRIFTLOOP_BASE_INTERMEDIATE_SIZE": "256",
    "DRIFTLOOP_BASE_MAX_LENGTH": "384",
    "DRIFTLOOP_BASE_MAX_EXAMPLES": "600",
    "DRIFTLOOP_BASE_EPOCHS": "2",
    "DRIFTLOOP_FINETUNE_EPOCHS": "3",
    "DRIFTLOOP_FINETUNE_MAX_LENGTH": "384",
    "DRIFTLOOP_GATE_SAMPLES": "1000",
}


@pytest.fixture(scope="module")
def tiny():
    saved = {k: os.environ.get(k) for k in TINY}
    os.environ.update(TINY)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def lake(tmp_path_factory, tiny) -> str:
    root = tmp_path_factory.mktemp("models")
    config = SimulationConfig(
        days=5,
        per_day=300,
        seed=21,
        scenario="new-topic",
        drift_day=4,
        drift_share=0.4,
        start=date(2026, 11, 1),
    )
    simulate(root / "logs", config)
    source, lake = LocalStore(root / "logs"), Lake(LocalStore(root / "lake"))
    ingest_objects(source, lake, pending_objects(source, lake))
    return str(root / "lake")


@pytest.fixture(scope="module")
def dataset(lake) -> dict:
    verdict = monitor(MonitorParams(lake=lake, end="2026-11-06", reference_days=3))[0]
    assert verdict["drift"]
    params = CurateParams(
        lake=lake, start="2026-11-05", end="2026-11-06", monitor_run="latest"
    )
    return curate(params)[0]


@pytest.fixture(scope="module")
def challenger(lake, dataset) -> dict:
    return finetune(FinetuneParams(lake=lake, dataset=dataset["version"]))


@pytest.fixture(scope="module")
def decision(lake, challenger) -> dict:
    return evaluate(EvaluateParams(lake=lake, use_case=USE_CASE, generate=2))


class TestFinetune:
    def test_the_first_run_pretrains_a_base_that_becomes_champion(self, challenger):
        base = registry.get(USE_CASE, challenger["base_version"])
        assert base.kind == "base"
        assert base.tags["base_model"] == "driftloop-tiny"
        assert "previous-champion" not in base.aliases

    def test_the_adapter_is_a_challenger_tagged_with_its_lineage(
        self, dataset, challenger
    ):
        version = registry.get(USE_CASE, "challenger")
        assert version.version == challenger["version"]
        assert version.tags["dataset_version"] == dataset["version"]
        assert version.tags["base_version"] == challenger["base_version"]
        assert version.tags["monitor_run"]
        assert version.kind == "adapter"

    def test_the_training_run_logs_losses_per_step_and_only_safetensors(
        self, challenger
    ):
        client = MlflowClient()
        run = client.get_run(challenger["mlflow_run_id"])
        assert run.data.params["dataset_version"] == challenger["dataset_version"]
        assert {"lora.rank", "lora.alpha", "lora.learning_rate"} <= set(run.data.params)
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert len(history) > 5
        assert history[-1].value < history[0].value
        files = [a.path for a in client.list_artifacts(run.info.run_id, "adapter")]
        assert "adapter/adapter_model.safetensors" in files
        assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]


class TestGate:
    def test_the_challenger_wins_the_drift_slice_and_is_promoted(
        self, decision, challenger
    ):
        drift = next(s for s in decision["slices"] if s["slice"] == "drift")
        assert drift["kind"] == "target"
        assert drift["low"] > 0, decision["reasons"]
        assert -1 <= drift["challenger.similarity"] <= 1  # a cosine
        assert decision["promoted"] is True, decision["reasons"]
        assert registry.get(USE_CASE, "champion").version == challenger["version"]
        previous = registry.get(USE_CASE, "previous-champion")
        assert previous.version == challenger["base_version"]

    def test_the_decision_is_an_mlflow_run_with_its_evidence_table(self, decision):
        run = mlflow.get_run(decision["mlflow_run_id"])
        assert run.data.tags["decision"] == "promote"
        assert run.data.metrics["drift.improvement"] > 0
        artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
        assert {"gate.json", "decision.json"} <= artifacts

    def test_a_challenger_trained_on_shuffled_answers_is_rejected(
        self, lake, dataset, decision
    ):
        champion = registry.get(USE_CASE, "champion").version
        poisoned = _poison(lake, dataset["version"])
        bad = finetune(FinetuneParams(lake=lake, dataset=poisoned))
        verdict = evaluate(
            EvaluateParams(
                lake=lake,
                use_case=USE_CASE,
                challenger=bad["version"],
                dataset=dataset["version"],
                generate=0,
            )
        )
        assert verdict["promote"] is False, verdict["reasons"]
        assert registry.get(USE_CASE, "champion").version == champion

    def test_rollback_returns_champion_to_the_base(self, decision, challenger):
        champion = registry.get(USE_CASE, "champion").version
        previous = registry.get(USE_CASE, "previous-champion").version
        registry.rollback(USE_CASE)
        assert registry.get(USE_CASE, "champion").version == previous
        registry.promote(USE_CASE, champion)
        assert registry.get(USE_CASE, "champion").version == champion


class TestJudge:
    def test_with_the_judge_on_its_verdicts_join_the_evidence(
        self, lake, decision, monkeypatch
    ):
        champion = registry.get(USE_CASE, "champion").version
        with serve_fake() as endpoint:
            monkeypatch.setenv("DRIFTLOOP_JUDGE_URL", endpoint.url)
            monkeypatch.setenv("DRIFTLOOP_JUDGE_MODEL", "judge-small")
            verdict = evaluate(
                EvaluateParams(
                    lake=lake,
                    use_case=USE_CASE,
                    challenger="champion",
                    champion="previous-champion",
                    generate=2,
                    promote=False,
                )
            )
        drift = next(s for s in verdict["slices"] if s["slice"] == "drift")
        # The endpoint answers "same, 0.8" to every case.
        assert drift["challenger.judge_score"] == pytest.approx(0.8)
        assert drift["champion.judge_same"] == 1
        assert endpoint.requests
        assert {r.body["model"] for r in endpoint.requests} == {"judge-small"}
        params = mlflow.get_run(verdict["mlflow_run_id"]).data.params
        assert params["judge.prompt_version"] == "judge-v1"
        assert registry.get(USE_CASE, "champion").version == champion


class TestFailures:
    def test_a_training_that_outlives_its_limit_fails_its_run_and_moves_no_alias(
        self, lake, dataset, decision, monkeypatch
    ):
        from tasks.finetune import TrainingFailed

        before = {a: registry.find(USE_CASE, a) for a in registry.ALIASES}
        monkeypatch.setenv("DRIFTLOOP_FINETUNE_TIMEOUT_S", "1")
        with pytest.raises(TrainingFailed, match="limit"):
            finetune(FinetuneParams(lake=lake, dataset=dataset["version"]))
        after = {a: registry.find(USE_CASE, a) for a in registry.ALIASES}
        assert {a: v and v.version for a, v in after.items()} == {
            a: v and v.version for a, v in before.items()
        }
        experiment = mlflow.get_experiment_by_name("driftloop-finetune")
        (last,) = MlflowClient().search_runs(
            [experiment.experiment_id], order_by=["start_time DESC"], max_results=1
        )
        assert last.info.status == "FAILED"

    def test_a_finetune_killed_with_sigkill_moves_no_alias_and_ends_killed(
        self, lake, dataset, decision
    ):
        import psutil

        from driftloop import tracking

        before = {a: registry.find(USE_CASE, a) for a in registry.ALIASES}
        versions = len(registry.versions(USE_CASE))
        command = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "driftloop"),
                "finetune",
                "--dataset",
                dataset["version"],
                "--lake",
                lake,
            ],
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        run_id = wait_for_running_run("driftloop-finetune", command)
        # Kill while the training child works: the whole group, no goodbye.
        deadline = time.monotonic() + 120
        while not any(
            "tasks.finetune" in " ".join(child.cmdline())
            for child in psutil.Process(command.pid).children(recursive=True)
        ):
            assert time.monotonic() < deadline, "the training child never started"
            time.sleep(0.2)
        os.killpg(command.pid, signal.SIGKILL)
        command.wait(timeout=60)

        after = {a: registry.find(USE_CASE, a) for a in registry.ALIASES}
        assert {a: v and v.version for a, v in after.items()} == {
            a: v and v.version for a, v in before.items()
        }
        assert len(registry.versions(USE_CASE)) == versions
        # The next run of the experiment finds the killed one and ends it KILLED.
        with tracking.run("driftloop-finetune", run_name="after the kill"):
            pass
        assert MlflowClient().get_run(run_id).info.status == "KILLED"

    def test_a_missing_dataset_version_is_a_clear_error(self, lake):
        from driftloop.errors import ConfigError

        with pytest.raises(ConfigError, match="is not in the lake"):
            finetune(FinetuneParams(lake=lake, dataset="0000dead"))


class TestLineage:
    def test_lineage_follows_the_champion_back_to_the_logs(self, lake, decision):
        from tasks.lineage import trace

        result = trace(lake, USE_CASE, "champion")
        steps = [step["what"] for step in result["chain"]]
        assert steps == [
            "model version",
            "training run",
            "base model",
            "dataset version",
            "monitor run",
            "log window",
        ]
        assert result["chain"][-1]["facts"]["log objects"] > 0

    def test_lineage_reads_driftloops_store_in_a_process_mlflow_was_never_told_of(
        self, lake, decision, monkeypatch
    ):
        # A fresh `driftloop lineage` process: no MLFLOW_TRACKING_URI, and MLflow's
        # own default store, not driftloop's. (set_tracking_uri would also write the
        # environment variable, so the process state is set up by hand.)
        from mlflow.tracking._tracking_service import utils

        from tasks.lineage import trace

        monkeypatch.delenv("MLFLOW_TRACKING_URI")
        monkeypatch.setattr(utils, "_tracking_uri", None)
        result = trace(lake, USE_CASE, "champion")
        assert result["chain"][1]["what"] == "training run"


def _poison(lake: str, version: str) -> str:
    """Write a copy of a dataset whose train answers are shuffled across prompts."""
    store = DatasetStore(LocalStore(lake))
    ref = store.find(version)
    examples = store.examples(ref)
    train = examples["split"] == "train"
    rng = np.random.default_rng(0)
    chats = [json.loads(m) for m in examples.loc[train, "messages"]]
    answers = [c[-1]["content"] for c in chats]
    rng.shuffle(answers)
    for chat, answer in zip(chats, answers, strict=True):
        chat[-1]["content"] = answer
    examples.loc[train, "messages"] = [json.dumps(c) for c in chats]
    examples["content_hash"] = [str(hash(m)) for m in examples["messages"]]
    card = dict(ref.card)
    poisoned = content_version(examples, {"poisoned": True})
    card["version"] = poisoned
    store.write(ref.name, poisoned, examples, card)
    return poisoned
