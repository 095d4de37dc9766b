"""S3 under faults, injected over HTTP between boto3 and the moto server.

Throttling, 5xx and resets are retried and the run's counts come out exact; a body cut
short is resumed from where it stopped, or its object fails cleanly and lands once on
the rerun; refusals (access denied, no such bucket) fail at once with what to check.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from urllib.parse import unquote, urlsplit

import boto3
import pytest

from driftloop.errors import StorageError
from driftloop.settings import S3Settings
from driftloop.storage import LocalStore, S3Store
from tasks.ingest import IngestReport, ingest_objects, pending_objects
from tasks.lake import Lake
from tests.reliability.faults import FaultProxy
from tests.tasks.test_ingest import record

# Three hourly objects of 400 records, one malformed line and one resend each.
OBJECTS = 3
PER_OBJECT = 400


@pytest.fixture
def proxy(s3_endpoint):
    with FaultProxy(s3_endpoint) as proxy:
        yield proxy


@pytest.fixture
def source_bucket(bucket) -> str:
    client = boto3.client("s3")
    for hour in range(OBJECTS):
        ids = range(hour * PER_OBJECT, (hour + 1) * PER_OBJECT)
        lines = [json.dumps(record(i)).encode() for i in ids]
        lines += [b'{"request_id": "cut', lines[0]]
        client.put_object(
            Bucket=bucket, Key=f"logs/h{hour:02d}.jsonl", Body=b"\n".join(lines)
        )
    return bucket


def through(proxy: FaultProxy, uri: str, **settings) -> S3Store:
    return S3Store(uri, S3Settings(endpoint_url=proxy.url, **settings))


def ingest(source, lake: Lake) -> IngestReport:
    return ingest_objects(source, lake, pending_objects(source, lake))


def assert_exact(report: IngestReport, lake: Lake) -> None:
    assert report.failed_objects == []
    assert (report.objects, report.read) == (OBJECTS, OBJECTS * (PER_OBJECT + 2))
    assert (report.landed, report.quarantined, report.duplicates) == (
        OBJECTS * PER_OBJECT,
        OBJECTS,
        OBJECTS,
    )
    ids = lake.read_interactions()["request_id"].to_pylist()
    assert len(ids) == len(set(ids)) == OBJECTS * PER_OBJECT


class TestRetried:
    @pytest.mark.parametrize("kind", ["slow_down", "internal_error", "reset"])
    def test_a_fault_on_reading_an_object_is_retried_and_the_counts_are_exact(
        self, proxy, source_bucket, tmp_path, kind
    ):
        source = through(proxy, f"s3://{source_bucket}/logs")
        proxy.inject(kind, times=3, method="GET", path_contains="h01.jsonl")
        lake = Lake(LocalStore(tmp_path / "lake"))

        report = ingest(source, lake)

        assert_exact(report, lake)
        gets = [s.answer for s in proxy.requests_for("h01.jsonl") if s.method == "GET"]
        assert gets == [kind, kind, kind, "forwarded"]

    def test_throttled_writes_to_a_bucket_lake_are_retried_and_commit_once(
        self, proxy, source_bucket
    ):
        source = through(proxy, f"s3://{source_bucket}/logs")
        lake = Lake(through(proxy, f"s3://{source_bucket}/lake"))
        proxy.inject("slow_down", times=2, method="PUT", path_contains="/interactions/")
        proxy.inject("reset", times=2, method="PUT", path_contains="/_manifest/")

        report = ingest(source, lake)

        assert_exact(report, lake)
        assert proxy.answers()["slow_down"] == 2
        assert proxy.answers()["reset"] == 2
        assert len(list(lake.store.list("_manifest"))) == 1


class TestBodyCutShort:
    def test_a_body_cut_mid_stream_is_resumed_from_the_byte_reached(
        self, proxy, bucket, tmp_path
    ):
        # Over 1 MiB, so the reader has consumed a whole chunk before the cut.
        lines = [json.dumps(record(i, prompt="x" * 900)).encode() for i in range(3000)]
        body = b"\n".join(lines)
        boto3.client("s3").put_object(Bucket=bucket, Key="logs/big.jsonl", Body=body)
        source = through(proxy, f"s3://{bucket}/logs")
        proxy.inject("cut_body", times=1, method="GET", path_contains="big.jsonl")
        lake = Lake(LocalStore(tmp_path / "lake"))

        report = ingest(source, lake)

        assert (report.failed_objects, report.landed) == ([], 3000)
        gets = [s for s in proxy.requests_for("big.jsonl") if s.method == "GET"]
        assert [s.answer for s in gets] == ["cut_body", "forwarded"]
        assert gets[1].range == f"bytes={len(body) // 2}-"
        ids = lake.read_interactions()["request_id"].to_pylist()
        assert sorted(ids) == sorted(f"req-{i}" for i in range(3000))

    def test_an_object_cut_short_on_every_attempt_fails_alone_and_lands_once_on_the_rerun(
        self, proxy, source_bucket, tmp_path
    ):
        source = through(proxy, f"s3://{source_bucket}/logs", max_attempts=2)
        proxy.inject(
            "cut_body", times=10, method="GET", path_contains="h01.jsonl", keep=0
        )
        lake = Lake(LocalStore(tmp_path / "lake"))

        first = ingest(source, lake)

        assert first.failed_objects == ["h01.jsonl"]
        assert "h01.jsonl" in first.errors["h01.jsonl"]
        assert "connection broke at byte 0" in first.errors["h01.jsonl"]
        assert first.landed == 2 * PER_OBJECT
        proxy.clear()

        rerun = ingest(source, lake)

        assert (rerun.objects, rerun.landed, rerun.failed_objects) == (
            1,
            PER_OBJECT,
            [],
        )
        ids = lake.read_interactions()["request_id"].to_pylist()
        assert len(ids) == len(set(ids)) == OBJECTS * PER_OBJECT


class TestRefusedAtOnce:
    def test_access_denied_on_the_source_fails_fast_saying_what_to_check(
        self, proxy, source_bucket, tmp_path
    ):
        source = through(proxy, f"s3://{source_bucket}/logs")
        proxy.inject("access_denied", times=100)
        lake = Lake(LocalStore(tmp_path / "lake"))
        started = time.monotonic()

        with pytest.raises(StorageError) as refused:
            ingest(source, lake)

        assert time.monotonic() - started < 2
        assert proxy.answers()["access_denied"] == 1
        assert str(refused.value) == (
            f"cannot list s3://{source_bucket}/logs: access denied; check the AWS "
            "credentials and bucket policy"
        )

    def test_access_denied_on_a_bucket_lake_fails_fast_before_anything_is_read(
        self, proxy, source_bucket
    ):
        source = LocalStore("/nonexistent-source")
        lake = Lake(through(proxy, f"s3://{source_bucket}/lake"))
        proxy.inject("access_denied", times=100)
        started = time.monotonic()

        with pytest.raises(StorageError, match="access denied; check the AWS"):
            ingest_objects(source, lake, [])

        assert time.monotonic() - started < 2
        assert proxy.answers() == Counter(access_denied=1)

    @pytest.mark.parametrize("role", ["source", "lake"])
    def test_a_missing_bucket_fails_fast_saying_so(self, proxy, tmp_path, role):
        missing = through(proxy, "s3://no-such-bucket-anywhere/x")
        source, lake = (
            (missing, Lake(LocalStore(tmp_path / "lake")))
            if role == "source"
            else (LocalStore(tmp_path), Lake(missing))
        )
        started = time.monotonic()

        with pytest.raises(StorageError) as refused:
            ingest(source, lake)

        assert time.monotonic() - started < 2
        assert len(proxy.seen) == 1
        assert "s3://no-such-bucket-anywhere/x" in str(refused.value)
        assert "the bucket does not exist; create it or fix the URI" in str(
            refused.value
        )


AWKWARD = ["logs/día 1/a+b #1.jsonl", "logs/with space.jsonl", "logs/ü/%41.jsonl"]


class TestAwkwardKeys:
    @pytest.mark.parametrize("key", AWKWARD)
    def test_a_key_round_trips_through_write_list_and_read(self, proxy, bucket, key):
        store = through(proxy, f"s3://{bucket}/p")
        store.write_bytes(key, b"payload")
        assert [info.key for info in store.list()] == [key]
        assert store.read_bytes(key) == b"payload"
        with store.open(key) as body:
            assert body.read() == b"payload"

    def test_objects_with_awkward_keys_ingest_once_under_uris_naming_them(
        self, proxy, bucket, tmp_path
    ):
        client = boto3.client("s3")
        for n, key in enumerate(AWKWARD):
            lines = [record(10 * n + i) for i in range(10)] + [b"not json"]
            body = b"\n".join(
                line if isinstance(line, bytes) else json.dumps(line).encode()
                for line in lines
            )
            client.put_object(Bucket=bucket, Key=key, Body=body)
        source = through(proxy, f"s3://{bucket}/logs")
        lake = Lake(LocalStore(tmp_path / "lake"))

        report = ingest(source, lake)

        assert (report.objects, report.landed, report.quarantined) == (3, 30, 3)
        uris = sorted(lake.manifest()["uri"].to_pylist())
        assert uris == sorted(
            source.describe(key.removeprefix("logs/")) for key in AWKWARD
        )
        assert f"s3://{bucket}/logs/d%C3%ADa%201/a%2Bb%20%231.jsonl" in uris
        # Each recorded URI names its object: decoded, it is the bucket and key.
        named = sorted(unquote(urlsplit(uri).path).lstrip("/") for uri in uris)
        assert named == sorted(AWKWARD)
        assert set(lake.read_interactions()["source"].to_pylist()) == set(uris)
        assert set(lake.read_quarantine()["source"].to_pylist()) == set(uris)
        assert pending_objects(source, lake) == []
