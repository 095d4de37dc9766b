"""`driftloop curate`, `datasets list|diff` and `forget` as a user runs them."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest
from typer.testing import CliRunner

from driftloop.cli import app
from driftloop.storage import LocalStore
from tasks.datasets import DatasetStore, user_hash
from tasks.ingest import ingest_objects, pending_objects
from tasks.lake import Lake
from tasks.simulate import SimulationConfig, simulate

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("cli-curate")
    simulate(
        root / "logs",
        SimulationConfig(days=2, per_day=200, seed=5, start=date(2026, 11, 1)),
    )
    source, lake = LocalStore(root / "logs"), Lake(LocalStore(root / "lake"))
    ingest_objects(source, lake, pending_objects(source, lake))
    return str(root / "lake")


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def first(lake) -> dict:
    out = _invoke("curate", "--lake", lake, "--end", "2026-11-02", "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


class TestCurate:
    def test_json_prints_the_version_path_examples_and_stage_counts(self, first):
        assert {"version", "path", "examples", "stages"} <= set(first)
        assert first["examples"] == first["stages"]["topic_balance"] > 0
        assert first["stages"]["window"] == 200

    def test_the_same_window_again_is_the_same_version_and_creates_nothing(
        self, lake, first
    ):
        out = _invoke("curate", "--lake", lake, "--end", "2026-11-02", "--json")
        again = json.loads(out.stdout)
        assert (again["version"], again["created"]) == (first["version"], False)

    def test_an_empty_window_exits_non_zero_with_the_reason(self, lake):
        out = _invoke(
            "curate", "--lake", lake, "--start", "2030-01-01", "--end", "2030-01-02"
        )
        assert out.exit_code == 2
        assert "nothing new to curate" in out.stderr

    def test_a_reviewed_file_of_another_format_is_refused(self, lake, tmp_path):
        path = tmp_path / "labels.txt"
        path.write_text("request_id\n")
        out = _invoke("curate", "--lake", lake, "--reviewed", str(path))
        assert out.exit_code == 2
        assert "neither .csv nor .parquet" in out.stderr

    def test_approved_review_rows_come_back_with_the_reviewers_answer(
        self, lake, first
    ):
        queue = pd.read_csv(
            first["review_queue"]["path"], dtype=str, keep_default_na=False
        )
        assert len(queue) > 3
        queue.loc[:2, "decision"] = "approve"
        queue.loc[:2, "corrected_response"] = "A reviewer wrote this better answer."
        queue.loc[3, "decision"] = "reject"
        labelled = first["review_queue"]["path"].replace(".csv", "-labelled.csv")
        queue.to_csv(labelled, index=False)
        out = _invoke(
            "curate",
            "--lake",
            lake,
            "--end",
            "2026-11-02",
            "--reviewed",
            labelled,
            "--json",
        )
        result = json.loads(out.stdout)
        assert result["created"] is True
        store = DatasetStore(LocalStore(lake))
        examples = store.examples(store.find(result["version"]))
        reviewed = examples[examples["source"] == "reviewed"]
        assert 1 <= len(reviewed) <= 3
        assert set(reviewed["target"]) == {"A reviewer wrote this better answer."}
        assert queue.loc[3, "request_id"] not in set(examples["request_id"])


class TestDatasets:
    def test_list_shows_every_version_with_its_counts(self, lake, first):
        out = _invoke("datasets", "list", "--lake", lake, "--json")
        versions = json.loads(out.stdout)["versions"]
        assert first["version"] in {v["version"] for v in versions}
        assert all(v["train"] + v["validation"] == v["examples"] for v in versions)

    def test_diff_of_two_versions_counts_added_and_removed_by_topic_and_source(
        self, lake, first
    ):
        versions = json.loads(
            _invoke("datasets", "list", "--lake", lake, "--json").stdout
        )
        latest = versions["versions"][-1]["version"]
        out = _invoke("datasets", "diff", first["version"], latest, "--lake", lake)
        assert out.exit_code == 0, out.output
        change = json.loads(
            _invoke(
                "datasets", "diff", first["version"], latest, "--lake", lake, "--json"
            ).stdout
        )
        assert {"added", "removed", "changed", "by_topic", "by_source"} <= set(change)

    def test_diff_of_an_unknown_version_says_what_exists(self, lake, first):
        out = _invoke("datasets", "diff", "ffffffff", first["version"], "--lake", lake)
        assert out.exit_code == 2
        assert "is not in the lake" in out.stderr
        assert "datasets list" in out.stderr

    def test_diff_with_one_version_given_is_refused(self, lake, first):
        out = _invoke("datasets", "diff", first["version"], "--lake", lake)
        assert out.exit_code == 2
        assert "give two versions" in out.stderr


class TestForget:
    def test_forget_lists_the_versions_holding_the_user_and_records_a_tombstone(
        self, lake, first
    ):
        users = Lake(LocalStore(lake)).read_interactions(columns=["user_id"])
        store = DatasetStore(LocalStore(lake))
        examples = store.examples(store.find(first["version"]))
        user = next(
            u
            for u in users["user_id"].to_pylist()
            if user_hash(u) in set(examples["user_hash"])
        )
        out = _invoke("forget", "--user-id", user, "--lake", lake, "--json")
        result = json.loads(out.stdout)
        assert f"support-assistant/{first['version']}" in result["dataset_versions"]
        assert result["model_versions"] == []
        assert user_hash(user) in store.tombstones()

    def test_forget_without_an_id_is_refused(self, lake):
        out = _invoke("forget", "--user-id", "", "--lake", lake)
        assert out.exit_code == 2
        assert "non-empty --user-id" in out.stderr
