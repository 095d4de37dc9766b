"""The curate flow on simulated traffic, through a real Prefect API and MLflow store."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from driftloop.storage import LocalStore
from flows.curate import EXPERIMENT, CurateParams, NothingToCurate, curate
from flows.monitor import MonitorParams, monitor
from tasks.datasets import DatasetStore, user_hash
from tasks.ingest import ingest_objects, pending_objects
from tasks.lake import Lake
from tasks.simulate import SimulationConfig, simulate
from tests.conftest import mlflow_texts, prefect_texts

pytestmark = pytest.mark.usefixtures("prefect_api")

# The monitor flow's tests simulate the same traffic, so embeddings are cache hits.
CONFIG = SimulationConfig(
    days=4,
    per_day=300,
    seed=3,
    scenario="new-topic",
    drift_day=3,
    drift_share=0.3,
    start=date(2026, 11, 1),
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("curate")
    simulate(root / "logs", CONFIG)
    source, lake = LocalStore(root / "logs"), Lake(LocalStore(root / "lake"))
    ingest_objects(source, lake, pending_objects(source, lake))
    return root


@pytest.fixture(scope="module")
def lake(root) -> str:
    return str(root / "lake")


@pytest.fixture(scope="module")
def first(lake):
    """Pre-launch traffic: the first version of the support dataset."""
    state = curate(CurateParams(lake=lake, end="2026-11-04"), return_state=True)
    return state.result()[0], state.state_details.flow_run_id


@pytest.fixture(scope="module")
def launch(lake, first):
    """The launch day, focused by the monitor run that caught it."""
    verdict = monitor(MonitorParams(lake=lake, end="2026-11-05", reference_days=2))[0]
    assert verdict["drift"], "the monitor should catch the launch"
    params = CurateParams(
        lake=lake, start="2026-11-04", end="2026-11-05", monitor_run="latest"
    )
    state = curate(params, return_state=True)
    return state.result()[0], state.state_details.flow_run_id, verdict


def _card(lake: str, result: dict) -> dict:
    store = DatasetStore(LocalStore(lake))
    return store.find(result["version"]).card


def _examples(lake: str, result: dict) -> pd.DataFrame:
    store = DatasetStore(LocalStore(lake))
    return store.examples(store.find(result["version"]))


class TestVersion:
    def test_a_window_becomes_a_version_with_chat_files_parquet_and_a_card(
        self, lake, first
    ):
        result, _ = first
        folder = Path(result["path"])
        assert result["created"] is True
        assert {p.name for p in folder.iterdir()} == {
            "train.jsonl",
            "validation.jsonl",
            "examples.parquet",
            "card.json",
            "card.md",
        }
        line = json.loads((folder / "train.jsonl").read_text().splitlines()[0])
        assert line["messages"][-1]["role"] == "assistant"
        assert any(m["role"] == "user" for m in line["messages"])
        card = _card(lake, result)
        assert card["examples"] == result["examples"] > 50
        assert (
            card["splits"]["train"] + card["splits"]["validation"] == card["examples"]
        )
        assert set(card["sources"]) >= {"correction", "feedback", "quality"}

    def test_the_card_counts_every_stage_in_order(self, lake, first):
        result, _ = first
        stages = list(result["stages"])
        assert stages[:3] == ["window", "selected", "forget"]
        assert stages[-1] == "topic_balance"
        counts = list(result["stages"].values())[1:]
        assert counts == sorted(counts, reverse=True) or "replay" in stages
        assert result["stages"]["topic_balance"] == result["examples"]

    def test_no_conversation_is_on_both_sides_of_the_split(self, lake, first):
        examples = _examples(lake, first[0])
        sides = examples.groupby("session_id")["split"].nunique()
        assert (sides == 1).all()
        assert set(examples["split"]) == {"train", "validation"}

    def test_a_rerun_of_the_same_window_gives_the_same_version_and_no_new_run(
        self, lake, first
    ):
        result, _ = first
        runs_before = len(_curate_runs())
        again = curate(CurateParams(lake=lake, end="2026-11-04"))[0]
        assert again["version"] == result["version"]
        assert again["created"] is False
        assert len(_curate_runs()) == runs_before


class TestLineage:
    def test_the_dataset_is_the_input_of_its_mlflow_run_with_the_version_as_digest(
        self, lake, first
    ):
        result, _ = first
        run = mlflow.get_run(result["mlflow_run_id"])
        (inp,) = run.inputs.dataset_inputs
        assert inp.dataset.digest == result["version"]
        assert inp.dataset.name == "support-assistant"
        assert json.loads(inp.dataset.source)["uri"] == result["path"]
        assert run.data.tags["dataset_version"] == result["version"]
        assert run.data.tags["window"].endswith("2026-11-04T00:00")
        assert run.data.metrics["examples"] == result["examples"]
        assert run.info.status == "FINISHED"

    def test_a_focused_version_names_its_monitor_run_and_parent(
        self, lake, first, launch
    ):
        result, _, verdict = launch
        run = mlflow.get_run(result["mlflow_run_id"])
        assert run.data.tags["monitor_run"] == verdict["mlflow_run_id"]
        assert result["parent"] == first[0]["version"]
        assert _card(lake, result)["monitor_run"] == verdict["mlflow_run_id"]


class TestFocus:
    def test_emerging_topic_examples_are_selected_as_drift_and_are_mostly_the_launch(
        self, lake, launch
    ):
        examples = _examples(lake, launch[0])
        drift = examples[examples["drift"]]
        assert (drift["source"] == "drift").sum() >= 10
        # The simulator's true topic is only in the logs' metadata; the drift flag
        # comes from the monitor's novelty test, so it can be checked against it.
        assert (drift["topic"] == "aurora_hub").mean() >= 0.9

    def test_the_parent_is_replayed_into_train_only(self, lake, launch):
        examples = _examples(lake, launch[0])
        replayed = examples[examples["source"] == "replay"]
        assert len(replayed) > 0
        assert set(replayed["split"]) == {"train"}

    def test_datasets_diff_explains_what_the_launch_version_added(
        self, lake, first, launch
    ):
        from tasks.datasets import diff

        change = diff(_examples(lake, first[0]), _examples(lake, launch[0]))
        assert change["by_topic"]["aurora_hub"]["added"] > 0
        assert change["by_topic"]["aurora_hub"]["removed"] == 0
        assert change["by_source"]["drift"]["added"] > 0


class TestPrivacy:
    def test_no_planted_pii_survives_in_files_mlflow_or_prefect(
        self, root, lake, first, launch
    ):
        planted = json.loads((root / "logs" / "_simulation.json").read_text())
        values = [item["value"] for item in planted["planted_pii"]]
        reached = {item["request_id"] for item in planted["planted_pii"]}
        outputs = [p for p in (root / "lake").rglob("*") if p.is_file()]
        written = [p for p in outputs if "datasets" in p.parts or "review" in p.parts]
        texts = {str(p): _text(p) for p in written}
        used = set()
        for result in (first[0], launch[0]):
            used |= set(_examples(lake, result)["request_id"])
            texts |= mlflow_texts(result["mlflow_run_id"])
        for flow_run_id in (first[1], launch[1]):
            published = prefect_texts(flow_run_id)
            assert published[f"prefect/{flow_run_id}/artifacts"], (
                "the flow run should have published its dataset card"
            )
            texts |= published
        # Planted items reached the candidates, so their absence is the scrubber's.
        assert reached & used
        leaks = [
            (where, v) for where, text in texts.items() for v in values if v in text
        ]
        assert leaks == []


class TestRefusals:
    def test_an_empty_window_is_refused_and_registers_nothing(self, lake, first):
        before = len(DatasetStore(LocalStore(lake)).versions())
        with pytest.raises(NothingToCurate, match="nothing new to curate"):
            curate(CurateParams(lake=lake, start="2027-01-01", end="2027-01-02"))
        assert len(DatasetStore(LocalStore(lake)).versions()) == before

    def test_a_window_where_everything_is_filtered_out_registers_nothing(
        self, lake, first, monkeypatch
    ):
        monkeypatch.setenv("DRIFTLOOP_CURATE_MIN_CHARS", "3000")
        before = len(DatasetStore(LocalStore(lake)).versions())
        with pytest.raises(NothingToCurate, match="filtered out"):
            curate(CurateParams(lake=lake, end="2026-11-02"))
        assert len(DatasetStore(LocalStore(lake)).versions()) == before

    def test_an_unknown_monitor_run_is_a_clear_error(self, lake):
        from driftloop.errors import ConfigError

        with pytest.raises(ConfigError, match="not in the MLflow store"):
            curate(CurateParams(lake=lake, end="2026-11-02", monitor_run="nope"))


class TestErasure:
    def test_a_forgotten_user_is_in_no_later_version(self, lake, first, launch):
        store = DatasetStore(LocalStore(lake))
        examples = _examples(lake, first[0])
        hashed = examples["user_hash"].value_counts().index[0]
        user = _user_with_hash(lake, hashed)
        store.forget(user)
        holding = {r.version for r in store.versions_with_user(user)}
        assert first[0]["version"] in holding
        again = curate(CurateParams(lake=lake, end="2026-11-04"))[0]
        assert again["created"] is True
        assert again["version"] != first[0]["version"]
        assert user_hash(user) not in set(_examples(lake, again)["user_hash"])
        assert again["stages"]["forget"] < again["stages"]["selected"]


def _user_with_hash(lake: str, hashed: str) -> str:
    users = Lake(LocalStore(lake)).read_interactions(columns=["user_id"])["user_id"]
    return next(u for u in set(users.to_pylist()) if user_hash(u) == hashed)


def _curate_runs() -> list:
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    return MlflowClient().search_runs([experiment.experiment_id])


def _text(path: Path) -> str:
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_json()
    return path.read_text(encoding="utf-8", errors="replace")
