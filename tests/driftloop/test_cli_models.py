"""The model commands refuse what they cannot do, with the fix, and exit non-zero.

The happy paths (train, gate, promote, roll back, trace) run with real training in
tests/flows/test_model_flows.py; these are the refusals a user meets first, against a
real MLflow store that holds no version of the use case yet.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from driftloop.cli import app

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()
NOBODY = "nobody-assistant"


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_evaluate_without_any_version_says_to_train_first():
    out = _invoke("evaluate", "--model", NOBODY)
    assert out.exit_code != 0
    assert "driftloop-nobody-assistant has no version 'challenger'" in out.output
    assert "driftloop finetune" in out.output


def test_rollback_without_a_promotion_before_it_is_refused():
    out = _invoke("rollback", "--model", NOBODY)
    assert out.exit_code != 0
    assert "no previous-champion to roll back to" in out.output


@pytest.mark.parametrize("share", ["0", "100", "150"])
def test_a_canary_share_outside_0_to_100_is_refused(share):
    out = _invoke("promote", "1", "--model", NOBODY, "--canary", share)
    assert out.exit_code != 0
    assert "not a percentage between 0 and 100" in out.output


def test_promoting_a_version_that_does_not_exist_names_the_versions_there_are():
    out = _invoke("promote", "7", "--model", NOBODY)
    assert out.exit_code != 0
    assert "has no version '7'" in out.output


def test_lineage_of_an_unknown_alias_is_a_clear_error(tmp_path):
    out = _invoke("lineage", "champion", "--model", NOBODY, "--lake", str(tmp_path))
    assert out.exit_code != 0
    assert "has no version 'champion'" in out.output


def test_finetune_on_a_missing_dataset_version_exits_with_the_reason(tmp_path):
    out = _invoke("finetune", "--dataset", "0000dead", "--lake", str(tmp_path))
    assert out.exit_code != 0
    assert "0000dead" in out.output
