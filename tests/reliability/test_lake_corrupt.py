"""A damaged file in the lake is named and skipped by readers, never fatal to a window.

Parts are damaged the way disks and hands damage them: overwritten with garbage,
truncated, deleted. A damaged manifest segment is different: without it dedup cannot
be trusted, so reading stops and says how to recover.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import boto3
import pytest

from driftloop.errors import StorageError
from driftloop.storage import LocalStore, S3Store
from tasks.ingest import ingest_objects, pending_objects
from tasks.lake import Lake
from tasks.windows import Window, load_window
from tests.tasks.test_ingest import record, write_jsonl

DAYS = (2, 3, 4)
PER_DAY = 30


def fill(lake: Lake, src) -> None:
    """Land three days of 30 records (one part each) and a quarantined line."""
    for n in DAYS:
        ids = range(n * 100, n * 100 + PER_DAY)
        lines = [record(i, day=n) for i in ids] + ([b"oops"] if n == 2 else [])
        write_jsonl(src / f"d{n}.jsonl", lines)
    source = LocalStore(src)
    ingest_objects(source, lake, pending_objects(source, lake))


def part_of(lake: Lake, n: int) -> str:
    (key,) = [k for k in lake.committed_parts() if f"date=2026-11-0{n}" in k]
    return key


def damage(lake: Lake, key: str, how: str) -> None:
    whole = lake.store.read_bytes(key)
    if how == "garbage":
        lake.store.write_bytes(key, b"\x00garbage" * (len(whole) // 8))
    elif how == "truncated":
        lake.store.write_bytes(key, whole[: len(whole) // 2])
    else:
        lake.store.delete(key)


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake(LocalStore(tmp_path / "lake"))
    fill(lake, tmp_path / "src")
    return lake


def ids_of_days(*days: int) -> list[str]:
    return sorted(f"req-{i}" for n in days for i in range(n * 100, n * 100 + PER_DAY))


class TestDamagedPart:
    @pytest.mark.parametrize("how", ["garbage", "truncated", "deleted"])
    def test_a_damaged_part_is_skipped_and_the_others_are_read(self, lake, how):
        key = part_of(lake, 3)
        damage(lake, key, how)

        table = lake.read_interactions()

        assert sorted(table["request_id"].to_pylist()) == ids_of_days(2, 4)
        assert list(lake.unreadable) == [lake.store.describe(key)]

    @pytest.mark.parametrize(
        ("how", "reason"),
        [
            ("garbage", "corrupt Parquet file"),
            ("truncated", "corrupt Parquet file"),
            ("deleted", "no such file"),
        ],
    )
    def test_the_warning_names_the_damaged_path_and_why(
        self, lake, caplog, how, reason
    ):
        key = part_of(lake, 3)
        damage(lake, key, how)

        with caplog.at_level(logging.WARNING, logger="tasks.lake"):
            lake.read_interactions()

        path = lake.store.describe(key)
        (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert warning.getMessage().startswith(f"part={path} unreadable, skipped: ")
        assert reason in warning.getMessage()
        assert reason in lake.unreadable[path]

    def test_a_window_loaded_for_monitoring_skips_the_part_and_reports_it(self, lake):
        key = part_of(lake, 4)
        damage(lake, key, "garbage")
        window = Window(
            datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC)
        )

        frame = load_window(lake, window)

        assert sorted(frame["request_id"]) == ids_of_days(3)
        assert list(lake.unreadable) == [lake.store.describe(key)]

    def test_a_part_outside_the_dates_read_is_not_opened_or_reported(self, lake):
        damage(lake, part_of(lake, 4), "garbage")

        table = lake.read_interactions(
            start=datetime(2026, 11, 2).date(), end=datetime(2026, 11, 3).date()
        )

        assert sorted(table["request_id"].to_pylist()) == ids_of_days(2, 3)
        assert lake.unreadable == {}

    def test_a_damaged_quarantine_part_is_skipped_like_an_interaction_part(self, lake):
        (key,) = lake.committed_parts(prefix="quarantine")
        damage(lake, key, "truncated")

        assert lake.read_quarantine().num_rows == 0
        assert list(lake.unreadable) == [lake.store.describe(key)]

    def test_ingestion_goes_on_over_a_lake_with_a_damaged_part(self, lake, tmp_path):
        damage(lake, part_of(lake, 2), "garbage")
        write_jsonl(
            tmp_path / "src" / "d5.jsonl", [record(i, day=5) for i in range(500, 510)]
        )
        source = LocalStore(tmp_path / "src")

        report = ingest_objects(source, lake, pending_objects(source, lake))

        assert (report.objects, report.landed) == (1, 10)
        ids = lake.read_interactions()["request_id"].to_pylist()
        assert sorted(ids) == sorted(
            ids_of_days(3, 4) + [f"req-{i}" for i in range(500, 510)]
        )

    def test_a_damaged_part_in_a_bucket_lake_is_skipped_and_named(
        self, bucket, tmp_path
    ):
        lake = Lake(S3Store(f"s3://{bucket}/lake"))
        fill(lake, tmp_path / "src")
        key = part_of(lake, 2)
        boto3.client("s3").put_object(
            Bucket=bucket, Key=f"lake/{key}", Body=b"PAR1 not really"
        )

        table = lake.read_interactions()

        assert sorted(table["request_id"].to_pylist()) == ids_of_days(3, 4)
        assert list(lake.unreadable) == [lake.store.describe(key)]
        assert lake.store.describe(key).startswith(f"s3://{bucket}/lake/interactions/")


class TestDamagedManifest:
    def test_a_damaged_manifest_segment_stops_reading_and_says_how_to_recover(
        self, lake
    ):
        (segment,) = [info.key for info in lake.store.list("_manifest")]
        damage(lake, segment, "truncated")

        with pytest.raises(StorageError) as refused:
            lake.read_interactions()

        message = str(refused.value)
        assert f"corrupt Parquet file {lake.store.describe(segment)}" in message
        assert "restore it from a backup or an earlier object version" in message


@pytest.mark.usefixtures("prefect_api")
def test_the_monitor_flow_reports_a_skipped_part_in_its_verdict_and_run(lake):
    from mlflow.tracking import MlflowClient

    from flows.monitor import MonitorParams, monitor

    key = part_of(lake, 4)
    damage(lake, key, "garbage")
    (result,) = monitor(
        MonitorParams(lake=lake.store.describe(), end="2026-11-05", reference_days=2)
    )
    assert result["skipped_parts"] == [lake.store.describe(key)]
    run = MlflowClient().get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["skipped_parts"] == 1.0
