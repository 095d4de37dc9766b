"""Objects that arrive late, twice, or rewritten land each request id exactly once.

Every case runs on a folder source and on a bucket source (the moto server), since the
two identify an object version differently: size and mtime, or the S3 ETag.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import date

import boto3
import pytest

from driftloop.storage import LocalStore, S3Store, Store
from tasks.ingest import IngestReport, ingest_objects, pending_objects
from tasks.lake import Lake
from tests.tasks.test_ingest import record


class Source:
    """A log source that a test writes to as a shipper would: whole objects."""

    def __init__(self, store: Store, put) -> None:
        self.store, self.put = store, put

    def upload(self, key: str, records: list[dict]) -> None:
        self.put(key, b"\n".join(json.dumps(r).encode() for r in records) + b"\n")


@pytest.fixture(params=["folder", "bucket"])
def source(request, tmp_path) -> Source:
    if request.param == "folder":
        root = tmp_path / "src"

        def put(key: str, body: bytes) -> None:
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            # A rewrite within the same clock tick must still look like a new version.
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))

        return Source(LocalStore(root), put)
    bucket = request.getfixturevalue("bucket")
    client = boto3.client("s3")
    return Source(
        S3Store(f"s3://{bucket}/logs"),
        lambda key, body: client.put_object(
            Bucket=bucket, Key=f"logs/{key}", Body=body
        ),
    )


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(LocalStore(tmp_path / "lake"))


def ingest(source: Source, lake: Lake) -> IngestReport:
    return ingest_objects(source.store, lake, pending_objects(source.store, lake))


def landed_ids(lake: Lake) -> Counter[str]:
    return Counter(lake.read_interactions()["request_id"].to_pylist())


def day(n: int, ids: range) -> list[dict]:
    return [record(i, day=n) for i in ids]


class TestLateObjects:
    def test_an_object_of_older_records_uploaded_after_newer_ones_lands_once_in_its_own_day(
        self, source, lake
    ):
        source.upload("2026-11-05/h00.jsonl", day(5, range(0, 50)))
        source.upload("2026-11-05/h01.jsonl", day(5, range(50, 100)))
        assert ingest(source, lake).landed == 100

        source.upload("2026-11-04/h23.jsonl", day(4, range(100, 130)))
        late = ingest(source, lake)
        again = ingest(source, lake)

        assert (late.objects, late.landed, late.duplicates) == (1, 30, 0)
        assert (again.objects, again.read) == (0, 0)
        assert set(landed_ids(lake).values()) == {1}
        assert len(landed_ids(lake)) == 130
        fourth = lake.read_interactions(date(2026, 11, 4), date(2026, 11, 4))
        assert sorted(fourth["request_id"].to_pylist()) == sorted(
            f"req-{i}" for i in range(100, 130)
        )

    def test_a_late_object_repeating_ids_already_landed_lands_only_its_new_ones(
        self, source, lake
    ):
        source.upload("2026-11-05/h00.jsonl", day(5, range(0, 40)))
        ingest(source, lake)

        source.upload("2026-11-04/h23.jsonl", day(4, range(30, 60)))
        late = ingest(source, lake)

        assert (late.read, late.landed, late.duplicates) == (30, 20, 10)
        assert len(landed_ids(lake)) == 60
        assert set(landed_ids(lake).values()) == {1}


class TestRepeatedObjects:
    def test_an_identical_object_uploaded_again_does_not_land_twice(self, source, lake):
        source.upload("h00.jsonl", day(5, range(25)))
        first = ingest(source, lake)

        source.upload("h00.jsonl", day(5, range(25)))
        second = ingest(source, lake)

        assert first.landed == 25
        # S3 gives identical bytes the same ETag, so the object is not even read;
        # a folder sees a new mtime and reads it, finding only duplicates.
        assert second.landed == 0
        assert second.duplicates == second.read
        assert second.objects == (1 if isinstance(source.store, LocalStore) else 0)
        assert landed_ids(lake) == Counter(f"req-{i}" for i in range(25))

    def test_the_same_object_under_a_second_name_counts_every_record_a_duplicate(
        self, source, lake
    ):
        source.upload("a/h00.jsonl", day(5, range(25)))
        source.upload("b/h00.jsonl", day(5, range(25)))

        report = ingest(source, lake)

        assert (report.objects, report.read, report.landed) == (2, 50, 25)
        assert report.duplicates == 25
        assert set(landed_ids(lake).values()) == {1}

    def test_an_object_rewritten_with_new_content_counts_its_old_ids_as_duplicates(
        self, source, lake
    ):
        source.upload("h00.jsonl", day(5, range(20)))
        ingest(source, lake)

        rewritten = [record(i, day=5, prompt=f"edited {i}") for i in range(22)]
        source.upload("h00.jsonl", rewritten)
        report = ingest(source, lake)

        assert (report.objects, report.read) == (1, 22)
        assert (report.landed, report.duplicates) == (2, 20)
        table = lake.read_interactions().sort_by("request_id").to_pylist()
        prompts = {row["request_id"]: row["prompt"] for row in table}
        # The first version of a record wins; the edit is counted, not landed.
        assert prompts["req-3"] == "question 3"
        assert prompts["req-21"] == "edited 21"
        assert len(table) == 22
