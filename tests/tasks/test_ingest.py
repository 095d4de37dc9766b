"""Ingestion lands each record exactly once and accounts for every line it read."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftloop.settings import IngestSettings
from driftloop.storage import LocalStore, S3Store
from tasks.ingest import ingest_objects, is_log_object, pending_objects
from tasks.lake import Lake


def record(i: int, day: int = 2, **extra) -> dict:
    return {
        "request_id": f"req-{i}",
        "timestamp": f"2026-11-{day:02d}T{i % 24:02d}:00:00Z",
        "model": "support-assistant",
        "prompt": f"question {i}",
        "response": f"answer {i}",
        "latency_ms": 100 + i,
        **extra,
    }


def write_jsonl(path: Path, lines: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = b"\n".join(
        line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines
    )
    path.write_bytes(raw + b"\n")


def run(source, lake_root, **kwargs):
    lake = Lake(LocalStore(lake_root))
    report = ingest_objects(source, lake, pending_objects(source, lake), **kwargs)
    return report, lake


ADVERSARIAL = [
    record(1),
    record(2),
    b'{"request_id": "broken"',
    b"[1, 2, 3]",
    b'{"request_id": "bad-utf8", "prompt": "\xff"}',
    {"timestamp": "2026-11-02T00:00:00Z", "prompt": "p", "response": "r"},
    record(3, timestamp="yesterday"),
    record(4, latency_ms="slow"),
    {k: v for k, v in record(5).items() if k != "response"},
    record(1),  # a shipper retry: same request id again in the same object
    b"",  # blank lines carry nothing and are not records
    record(6),
]


class TestCounting:
    def test_every_line_read_is_landed_quarantined_or_a_duplicate(self, tmp_path):
        write_jsonl(tmp_path / "src" / "a.jsonl", ADVERSARIAL)
        report, lake = run(LocalStore(tmp_path / "src"), tmp_path / "lake")
        assert report.read == 11
        assert (report.landed, report.quarantined, report.duplicates) == (3, 7, 1)
        assert report.read == report.landed + report.quarantined + report.duplicates
        assert lake.read_interactions().num_rows == 3

    def test_each_quarantined_line_keeps_its_object_line_raw_bytes_and_reason(
        self, tmp_path
    ):
        write_jsonl(tmp_path / "src" / "a.jsonl", ADVERSARIAL)
        _, lake = run(LocalStore(tmp_path / "src"), tmp_path / "lake")
        rows = lake.read_quarantine().to_pylist()
        by_line = {row["source_line"]: row for row in rows}
        assert sorted(by_line) == [3, 4, 5, 6, 7, 8, 9]
        assert by_line[3]["raw"] == b'{"request_id": "broken"'
        assert by_line[3]["reason"].startswith("not JSON")
        assert by_line[4]["reason"] == "not an object: a JSON list"
        assert by_line[5]["reason"] == "invalid UTF-8"
        assert by_line[6]["reason"] == "missing request_id"
        assert by_line[7]["reason"] == "unparseable timestamp: 'yesterday'"
        assert by_line[8]["reason"].startswith("wrong type: latency_ms")
        assert by_line[9]["reason"] == "missing response"
        assert all(row["source"].endswith("a.jsonl") for row in rows)


class TestExactlyOnce:
    def test_a_second_run_over_the_same_source_lands_nothing(self, tmp_path):
        write_jsonl(tmp_path / "src" / "a.jsonl", [record(i) for i in range(20)])
        source = LocalStore(tmp_path / "src")
        first, _ = run(source, tmp_path / "lake")
        second, lake = run(source, tmp_path / "lake")
        assert (first.landed, second.objects, second.read) == (20, 0, 0)
        assert lake.read_interactions().num_rows == 20

    def test_new_objects_land_in_a_later_run(self, tmp_path):
        write_jsonl(tmp_path / "src" / "h00.jsonl", [record(i) for i in range(5)])
        run(LocalStore(tmp_path / "src"), tmp_path / "lake")
        write_jsonl(tmp_path / "src" / "h01.jsonl", [record(i) for i in range(5, 9)])
        report, lake = run(LocalStore(tmp_path / "src"), tmp_path / "lake")
        assert (report.objects, report.landed) == (1, 4)
        assert lake.read_interactions().num_rows == 9

    def test_a_request_id_already_in_the_lake_is_a_duplicate_in_a_later_object(
        self, tmp_path
    ):
        write_jsonl(tmp_path / "src" / "h00.jsonl", [record(1), record(2)])
        run(LocalStore(tmp_path / "src"), tmp_path / "lake")
        write_jsonl(tmp_path / "src" / "h01.jsonl", [record(2), record(3)])
        report, lake = run(LocalStore(tmp_path / "src"), tmp_path / "lake")
        assert (report.landed, report.duplicates) == (1, 1)
        ids = sorted(lake.read_interactions()["request_id"].to_pylist())
        assert ids == ["req-1", "req-2", "req-3"]

    def test_duplicates_across_objects_of_one_run_land_once(self, tmp_path):
        write_jsonl(tmp_path / "src" / "h00.jsonl", [record(1), record(2)])
        write_jsonl(tmp_path / "src" / "h01.jsonl", [record(2), record(3)])
        report, lake = run(LocalStore(tmp_path / "src"), tmp_path / "lake")
        assert (report.landed, report.duplicates) == (3, 1)
        assert lake.read_interactions().num_rows == 3

    def test_a_crash_before_the_manifest_commit_leaves_nothing_visible_and_a_rerun_lands_once(
        self, tmp_path, monkeypatch
    ):
        write_jsonl(tmp_path / "src" / "a.jsonl", [record(i) for i in range(10)])
        source = LocalStore(tmp_path / "src")

        def crash(*args, **kwargs):
            raise KeyboardInterrupt("killed between data and manifest")

        with monkeypatch.context() as patch:
            patch.setattr(Lake, "commit", crash)
            with pytest.raises(KeyboardInterrupt):
                run(source, tmp_path / "lake")
        written = list((tmp_path / "lake" / "interactions").rglob("*.parquet"))
        assert written, (
            "the crash must come after data was written for this test to mean anything"
        )
        assert Lake(LocalStore(tmp_path / "lake")).read_interactions().num_rows == 0

        report, lake = run(source, tmp_path / "lake")
        assert report.landed == 10
        assert sorted(lake.read_interactions()["request_id"].to_pylist()) == sorted(
            f"req-{i}" for i in range(10)
        )

    def test_an_object_larger_than_one_part_is_split_and_still_counted_once(
        self, tmp_path
    ):
        lines = [record(i) for i in range(5000)] + [record(7)]
        write_jsonl(tmp_path / "src" / "a.jsonl", lines)
        settings = IngestSettings(rows_per_part=1000)
        report, lake = run(
            LocalStore(tmp_path / "src"), tmp_path / "lake", settings=settings
        )
        assert (report.landed, report.duplicates) == (5000, 1)
        # Parts are cut at block boundaries (4096 lines) once 1000 rows are buffered.
        assert len(lake.committed_parts()) == 2
        assert lake.read_interactions().num_rows == 5000


class TestFormats:
    def test_gzip_and_parquet_objects_land_like_jsonl(self, tmp_path):
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.jsonl.gz").write_bytes(
            gzip.compress(b"\n".join(json.dumps(record(i)).encode() for i in range(3)))
        )
        pq.write_table(
            pa.Table.from_pylist([record(i) for i in range(3, 6)]), src / "b.parquet"
        )
        report, lake = run(LocalStore(src), tmp_path / "lake")
        assert (report.read, report.landed) == (6, 6)
        landed = lake.read_interactions().sort_by("request_id")
        assert landed["latency_ms"].to_pylist() == [100.0 + i for i in range(6)]

    def test_a_corrupt_gzip_is_reported_left_pending_and_the_run_goes_on(
        self, tmp_path
    ):
        src = tmp_path / "src"
        write_jsonl(src / "good.jsonl", [record(1)])
        whole = gzip.compress(
            b"\n".join(json.dumps(record(i)).encode() for i in range(500))
        )
        (src / "bad.jsonl.gz").write_bytes(whole[: len(whole) // 2])
        report, lake = run(LocalStore(src), tmp_path / "lake")
        assert report.failed_objects == ["bad.jsonl.gz"]
        assert "bad.jsonl.gz" in report.errors
        assert report.landed == 1
        pending = [info.key for info in pending_objects(LocalStore(src), lake)]
        assert pending == ["bad.jsonl.gz"]

    def test_files_named_with_underscore_or_dot_or_other_suffixes_are_not_logs(self):
        assert is_log_object("2026/11/02/h00.jsonl")
        assert is_log_object("a/b.jsonl.gz")
        assert is_log_object("a/b.parquet")
        assert not is_log_object("_simulation.json")
        assert not is_log_object("a/_tmp/b.jsonl")
        assert not is_log_object("a/.hidden.jsonl")
        assert not is_log_object("a/readme.txt")


class TestS3:
    def test_an_s3_source_gives_the_same_lake_as_the_same_files_in_a_folder(
        self, tmp_path, bucket
    ):
        lines = [record(i, day=2 + i % 2) for i in range(30)] + [b"not json", record(4)]
        write_jsonl(tmp_path / "src" / "logs" / "h00.jsonl", lines)
        client = boto3.client("s3")
        client.put_object(
            Bucket=bucket,
            Key="logs/h00.jsonl",
            Body=(tmp_path / "src" / "logs" / "h00.jsonl").read_bytes(),
        )
        from_folder, folder_lake = run(
            LocalStore(tmp_path / "src"), tmp_path / "lake-a"
        )
        from_s3, s3_lake = run(S3Store(f"s3://{bucket}"), tmp_path / "lake-b")
        assert from_folder.summary() == from_s3.summary()
        columns = [
            c for c in folder_lake.read_interactions().column_names if c != "source"
        ]
        assert (
            folder_lake.read_interactions()
            .select(columns)
            .equals(s3_lake.read_interactions().select(columns))
        )

    def test_the_lake_itself_can_live_in_a_bucket(self, tmp_path, bucket):
        write_jsonl(tmp_path / "src" / "a.jsonl", [record(i) for i in range(5)])
        lake = Lake(S3Store(f"s3://{bucket}/lake"))
        source = LocalStore(tmp_path / "src")
        report = ingest_objects(source, lake, pending_objects(source, lake))
        again = pending_objects(source, lake)
        assert (report.landed, again) == (5, [])
        assert lake.read_interactions().num_rows == 5
