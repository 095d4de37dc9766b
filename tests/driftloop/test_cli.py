"""The command line: JSON on stdout, clear errors with a non-zero exit."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from driftloop.cli import app
from tests.tasks.test_ingest import ADVERSARIAL, write_jsonl

runner = CliRunner()


@pytest.mark.usefixtures("prefect_api")
class TestIngest:
    def test_ingest_json_prints_the_counts_and_a_rerun_lands_nothing(self, tmp_path):
        write_jsonl(tmp_path / "src" / "a.jsonl", ADVERSARIAL)
        args = [
            "ingest",
            "--source",
            str(tmp_path / "src"),
            "--lake",
            str(tmp_path / "lake"),
            "--json",
        ]
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        assert json.loads(first.stdout) == {
            "objects": 1,
            "read": 11,
            "landed": 3,
            "quarantined": 7,
            "duplicates": 1,
            "failed_objects": [],
        }
        second = json.loads(runner.invoke(app, args).stdout)
        assert (second["objects"], second["landed"]) == (0, 0)

    def test_an_unreadable_mapping_file_is_a_clear_error_and_exit_code_2(
        self, tmp_path
    ):
        write_jsonl(tmp_path / "src" / "a.jsonl", ADVERSARIAL)
        result = runner.invoke(
            app,
            [
                "ingest",
                "--source",
                str(tmp_path / "src"),
                "--lake",
                str(tmp_path / "lake"),
                "--mapping",
                str(tmp_path / "missing.json"),
            ],
        )
        assert result.exit_code == 2
        assert "cannot read mapping file" in result.output

    def test_an_unsupported_source_scheme_is_refused(self, tmp_path):
        result = runner.invoke(
            app, ["ingest", "--source", "ftp://host/logs", "--lake", str(tmp_path)]
        )
        assert result.exit_code == 2
        assert "unsupported URI 'ftp://host/logs'" in result.output


def test_status_reports_volumes_and_quarantine_reasons(tmp_path):
    from driftloop.storage import LocalStore
    from tasks.ingest import ingest_objects, pending_objects
    from tasks.lake import Lake

    write_jsonl(tmp_path / "src" / "a.jsonl", ADVERSARIAL)
    source, lake = LocalStore(tmp_path / "src"), Lake(LocalStore(tmp_path / "lake"))
    ingest_objects(source, lake, pending_objects(source, lake))
    result = runner.invoke(app, ["status", "--lake", str(tmp_path / "lake"), "--json"])
    summary = json.loads(result.stdout)
    assert summary["interactions"] == 3
    assert summary["per_day"] == {"2026-11-02": {"support-assistant": 3}}
    assert summary["quarantine_reasons"]["wrong type"] == 1
    assert sum(summary["quarantine_reasons"].values()) == 7


def test_schema_lists_every_field():
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    for field in ("request_id", "corrected_response", "metadata", "source_line"):
        assert field in result.stdout
