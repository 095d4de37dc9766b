"""Credentials never travel in URIs that driftloop would record.

A store URI with a user or password is refused before any flow run records it among
its parameters, and the refusal does not repeat the secret. A tracking URI's secret
is stripped from everything driftloop says about it.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from driftloop import tracking
from driftloop.cli import app
from driftloop.errors import ConfigError, TrackingError
from driftloop.storage import open_store
from tests.conftest import _free_port

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", "--source", f"s3://AKIAEXAMPLE:{SECRET}@logs/prod"],
        ["ingest", "--source", "logs/", "--lake", f"s3://me:{SECRET}@lake/prod"],
        ["monitor", "--lake", f"s3://me:{SECRET}@lake/prod"],
        ["curate", "--lake", f"s3://me:{SECRET}@lake/prod"],
        ["status", "--lake", f"s3://me:{SECRET}@lake/prod"],
    ],
    ids=["ingest-source", "ingest-lake", "monitor", "curate", "status"],
)
def test_a_uri_with_credentials_is_refused_without_repeating_them(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "carries credentials" in result.output
    assert "AWS_ACCESS_KEY_ID" in result.output
    assert SECRET not in result.output


def test_open_store_refuses_them_too_for_flows_started_elsewhere():
    with pytest.raises(ConfigError, match=r"s3://\*\*\*@lake/prod carries") as caught:
        open_store(f"s3://me:{SECRET}@lake/prod")
    assert SECRET not in str(caught.value)


def test_an_unreachable_tracking_server_is_named_without_its_password(monkeypatch):
    import mlflow

    uri = f"http://admin:{SECRET}@127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        with (
            pytest.raises(TrackingError) as caught,
            tracking.run("reliability-secret"),
        ):
            pass
    finally:
        monkeypatch.undo()
        mlflow.set_tracking_uri(tracking.tracking_uri())
    assert "127.0.0.1" in str(caught.value)
    assert SECRET not in str(caught.value)
