"""An ingest run killed with SIGKILL loses nothing and duplicates nothing when rerun.

The run is a real child process over simulated traffic (malformed and re-sent lines
included); it kills itself at a chosen manifest commit, after its data parts are
written. Each rerun is compared with one uninterrupted run over the same source.
"""

from __future__ import annotations

import logging
import signal
from collections import Counter
from datetime import date
from pathlib import Path

import boto3
import pyarrow.compute as pc
import pytest

from driftloop.storage import LocalStore, S3Store, Store
from tasks.ingest import IngestReport, ingest_objects, pending_objects
from tasks.lake import Lake
from tasks.simulate import SimulationConfig, simulate
from tests.reliability.faults import finish, ingest_process

COUNTS = ("read", "landed", "quarantined", "duplicates")


@pytest.fixture(scope="module")
def traffic(tmp_path_factory) -> Path:
    """A day of simulated traffic: 24 hourly objects, with malformed and re-sent lines."""
    out = tmp_path_factory.mktemp("traffic")
    config = SimulationConfig(days=1, per_day=1500, seed=7, start=date(2026, 11, 3))
    simulate(out, config)
    return out


@pytest.fixture(scope="module")
def uninterrupted(traffic, tmp_path_factory) -> tuple[IngestReport, list[str]]:
    """What one clean run lands from the traffic: its counts and its request ids."""
    lake = Lake(LocalStore(tmp_path_factory.mktemp("reference-lake")))
    report = ingest_now(LocalStore(traffic), lake)
    assert report.quarantined and report.duplicates, "traffic must carry faults"
    return report, sorted(lake.read_interactions()["request_id"].to_pylist())


def ingest_now(source: Store, lake: Lake) -> IngestReport:
    return ingest_objects(source, lake, pending_objects(source, lake))


def committed_counts(lake: Lake) -> dict[str, int]:
    manifest = lake.manifest()
    return {name: pc.sum(manifest[name]).as_py() or 0 for name in COUNTS}


def assert_same_as_uninterrupted(lake: Lake, uninterrupted) -> None:
    reference, reference_ids = uninterrupted
    ids = lake.read_interactions()["request_id"].to_pylist()
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    assert repeated == [], f"request ids landed twice: {repeated[:5]}"
    assert sorted(ids) == reference_ids
    assert committed_counts(lake) == {name: getattr(reference, name) for name in COUNTS}


class TestKilledBeforeItsFirstCommit:
    def test_a_run_killed_after_writing_parts_leaves_nothing_visible_and_a_rerun_lands_each_record_once(
        self, traffic, tmp_path, uninterrupted
    ):
        lake_root = tmp_path / "lake"
        child = ingest_process(str(traffic), str(lake_root), kill_at=1)
        child.communicate(timeout=120)
        assert child.returncode == -signal.SIGKILL
        assert list((lake_root / "interactions").rglob("*.parquet")), (
            "the kill must come after parts were written for this test to mean anything"
        )
        lake = Lake(LocalStore(lake_root))
        assert lake.read_interactions().num_rows == 0
        assert len(pending_objects(LocalStore(traffic), lake)) == 24

        rerun = ingest_now(LocalStore(traffic), lake)

        assert rerun.objects == 24
        assert rerun.read == rerun.landed + rerun.quarantined + rerun.duplicates
        assert_same_as_uninterrupted(lake, uninterrupted)


class TestKilledAfterSomeCommits:
    def test_a_partial_run_is_resumed_from_its_last_commit_and_counts_add_up(
        self, traffic, tmp_path, uninterrupted
    ):
        lake_root = tmp_path / "lake"
        # Commits of 5 objects: two land, the third kills the run.
        child = ingest_process(
            str(traffic), str(lake_root), kill_at=3, objects_per_commit=5
        )
        child.communicate(timeout=120)
        assert child.returncode == -signal.SIGKILL
        lake = Lake(LocalStore(lake_root))
        before = committed_counts(lake)
        assert len(lake.manifest()) == 10
        assert lake.read_interactions().num_rows == before["landed"] > 0

        rerun = ingest_now(LocalStore(traffic), lake)

        assert rerun.objects == 14
        for name in COUNTS:
            assert before[name] + getattr(rerun, name) == getattr(
                uninterrupted[0], name
            ), name
        assert_same_as_uninterrupted(lake, uninterrupted)

    def test_a_run_killed_twice_in_a_row_still_ends_with_each_record_once(
        self, traffic, tmp_path, uninterrupted
    ):
        lake_root = tmp_path / "lake"
        for kill_at in (2, 3):
            child = ingest_process(
                str(traffic), str(lake_root), kill_at=kill_at, objects_per_commit=4
            )
            child.communicate(timeout=120)
            assert child.returncode == -signal.SIGKILL
        lake = Lake(LocalStore(lake_root))
        assert len(lake.manifest()) == 4 + 8

        finish(ingest_process(str(traffic), str(lake_root)))

        assert pending_objects(LocalStore(traffic), lake) == []
        assert_same_as_uninterrupted(lake, uninterrupted)


class TestKilledWithTheLakeInABucket:
    def test_the_killed_runs_lock_is_taken_over_once_its_lease_expires_and_the_rerun_lands_once(
        self, traffic, bucket, uninterrupted, caplog
    ):
        lake_uri = f"s3://{bucket}/lake"
        child = ingest_process(
            str(traffic),
            lake_uri,
            kill_at=2,
            objects_per_commit=6,
            env={"DRIFTLOOP_LAKE_LOCK_LEASE_S": "1"},
        )
        child.communicate(timeout=120)
        assert child.returncode == -signal.SIGKILL
        leftover = boto3.client("s3").get_object(Bucket=bucket, Key="lake/_lock")
        assert b'"purpose": "ingest"' in leftover["Body"].read()

        lake = Lake(S3Store(lake_uri))
        with caplog.at_level(logging.WARNING, logger="driftloop.storage"):
            rerun = ingest_now(LocalStore(traffic), lake)

        assert "taken over from" in caplog.text
        assert rerun.objects == 24 - 6
        assert_same_as_uninterrupted(lake, uninterrupted)
        keys = [
            o["Key"]
            for o in boto3.client("s3")
            .list_objects_v2(Bucket=bucket, Prefix="lake/_lock")
            .get("Contents", [])
        ]
        assert keys == [], "the rerun releases the lock it took over"
