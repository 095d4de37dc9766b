"""What driftloop writes about where things are: URIs without credentials."""

from __future__ import annotations

import pytest

from driftloop.tracking import artifact_key, strip_credentials


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "postgresql+psycopg://mlflow:s3cret@db.internal:5432/mlflow",
            "postgresql+psycopg://db.internal:5432/mlflow",
        ),
        ("https://alice:pw@mlflow.example.com/", "https://mlflow.example.com/"),
        (
            "s3://lake/prod?region=eu-west-1&X-Amz-Signature=abc&token=t",
            "s3://lake/prod?region=eu-west-1",
        ),
        (
            "http://mlflow:5000/?api_key=k#runs",
            "http://mlflow:5000/#runs",
        ),
    ],
)
def test_user_password_and_secret_parameters_are_removed(uri, shown):
    assert strip_credentials(uri) == shown


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:////work/team/.driftloop/mlflow.db",
        "sqlite:///relative/mlflow.db",
        "file:///var/lib/driftloop/lake",
        "/var/lib/driftloop/lake",
        "s3://lake/prod?region=eu-west-1",
        "http://127.0.0.1:5000",
    ],
)
def test_a_uri_without_secrets_is_kept_exactly_as_written(uri):
    assert strip_credentials(uri) == uri


@pytest.mark.parametrize(
    ("parts", "key"),
    [
        (("improve", "support-assistant"), "improve-support-assistant"),
        (("gate", "Sales_Assistant v2"), "gate-sales-assistant-v2"),
        (("canary", "../../etc/passwd"), "canary-etc-passwd"),
        (("dataset-card", "día\x00#1"), "dataset-card-d-a-1"),
    ],
)
def test_artifact_keys_from_any_use_case_name_are_keys_prefect_accepts(parts, key):
    from prefect.client.schemas.actions import ArtifactCreate

    assert artifact_key(*parts) == key
    ArtifactCreate(key=artifact_key(*parts), type="markdown", data="x")
