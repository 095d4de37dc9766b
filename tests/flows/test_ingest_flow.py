"""The ingest flow runs on a real Prefect API and records each run in MLflow."""

from __future__ import annotations

import json

import boto3
import mlflow
import pytest

from flows.ingest import IngestParams, ingest
from tests.tasks.test_ingest import ADVERSARIAL, record, write_jsonl

pytestmark = pytest.mark.usefixtures("prefect_api")


def ingest_runs(source: str):
    runs = mlflow.search_runs(
        experiment_names=["driftloop-ingest"], output_format="list"
    )
    return [r for r in runs if r.data.tags.get("source") == source]


def test_an_ingest_run_logs_its_counts_and_its_prefect_flow_run_to_mlflow(tmp_path):
    write_jsonl(tmp_path / "src" / "a.jsonl", ADVERSARIAL)
    source = str(tmp_path / "src")
    result = ingest(IngestParams(source=source, lake=str(tmp_path / "lake")))
    assert result == {
        "objects": 1,
        "read": 11,
        "landed": 3,
        "quarantined": 7,
        "duplicates": 1,
        "failed_objects": [],
    }
    (run,) = ingest_runs(source)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["landed"] == 3
    assert run.data.metrics["quarantined"] == 7
    assert run.data.tags["prefect.flow_run_id"]
    assert run.info.artifact_uri.startswith(("file://", "/"))
    assert "mlruns" not in run.info.artifact_uri


def test_an_s3_source_is_tagged_with_its_uri(tmp_path, bucket):
    boto3.client("s3").put_object(
        Bucket=bucket, Key="logs/a.jsonl", Body=json.dumps(record(1)).encode()
    )
    result = ingest(
        IngestParams(source=f"s3://{bucket}/logs", lake=str(tmp_path / "lake"))
    )
    assert result["landed"] == 1
    (run,) = ingest_runs(f"s3://{bucket}/logs")
    assert run.data.tags["source"] == f"s3://{bucket}/logs"


def test_an_s3_source_with_credentials_is_refused_before_a_run_records_it(
    tmp_path, bucket
):
    from driftloop.errors import ConfigError

    source = f"s3://AKIAEXAMPLE:secret@{bucket}/logs"
    with pytest.raises(ConfigError, match="carries credentials") as caught:
        ingest(IngestParams(source=source, lake=str(tmp_path / "lake")))
    assert "secret" not in str(caught.value)
    assert ingest_runs(f"s3://{bucket}/logs") == []


def test_a_missing_bucket_fails_the_flow_with_a_clear_message_and_a_failed_run(
    tmp_path, s3_endpoint
):
    from driftloop.errors import StorageError

    with pytest.raises(StorageError, match="bucket does not exist"):
        ingest(
            IngestParams(source="s3://no-such-bucket/logs", lake=str(tmp_path / "lake"))
        )
    (run,) = ingest_runs("s3://no-such-bucket/logs")
    assert run.info.status == "FAILED"
