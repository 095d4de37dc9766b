"""Registry aliases on a real MLflow store: promotion, rollback and canary."""

from __future__ import annotations

import uuid

import mlflow
import pytest

from driftloop import tracking
from driftloop.errors import ConfigError
from tasks import registry


@pytest.fixture
def use_case() -> str:
    return f"case-{uuid.uuid4().hex[:8]}"


def _version(use_case: str, kind: str = "adapter", **tags: str) -> str:
    with tracking.run("driftloop-finetune", run_name="test") as run:
        mlflow.log_dict({"kind": kind}, "files/info.json")
        version = registry.register(
            use_case, f"{run.info.artifact_uri}/files", run.info.run_id, kind, tags
        )
    return version.version


def test_a_use_case_gets_its_own_registered_model(use_case):
    _version(use_case, "base")
    assert registry.versions(use_case)[0].name == f"driftloop-{use_case}"
    assert registry.model_name("a/../b") != registry.model_name("a_b")


def test_promotion_moves_champion_and_keeps_the_old_one_for_rollback(use_case):
    first, second = _version(use_case, "base"), _version(use_case)
    registry.set_alias(use_case, registry.CHAMPION, first)
    registry.set_alias(use_case, registry.CHALLENGER, second)
    moved = registry.promote(use_case, second)
    assert moved == {"champion": second, "previous-champion": first}
    assert registry.get(use_case, "champion").version == second
    assert registry.get(use_case, "previous-champion").version == first
    assert registry.find(use_case, "challenger") is None


def test_rollback_gives_champion_back_to_the_previous_one(use_case):
    first, second = _version(use_case, "base"), _version(use_case)
    registry.set_alias(use_case, registry.CHAMPION, first)
    registry.promote(use_case, second)
    assert registry.rollback(use_case) == {
        "champion": first,
        "previous-champion": second,
    }
    assert registry.get(use_case, "champion").version == first


def test_rollback_without_a_previous_champion_is_refused(use_case):
    registry.set_alias(use_case, registry.CHAMPION, _version(use_case, "base"))
    with pytest.raises(ConfigError, match="no previous-champion to roll back to"):
        registry.rollback(use_case)


def test_a_canary_gets_its_alias_and_traffic_share_and_champion_stays(use_case):
    first, second = _version(use_case, "base"), _version(use_case)
    registry.set_alias(use_case, registry.CHAMPION, first)
    assert registry.canary(use_case, second, 10) == {
        "canary": second,
        "traffic_share": 10,
    }
    canary = registry.get(use_case, "canary")
    assert (canary.version, canary.tags["canary_share"]) == (second, "10")
    assert registry.get(use_case, "champion").version == first


@pytest.mark.parametrize("share", [0, 100, -5, 150])
def test_a_canary_share_outside_0_to_100_is_refused(use_case, share):
    version = _version(use_case)
    with pytest.raises(ConfigError, match="not a percentage between 0 and 100"):
        registry.canary(use_case, version, share)


def test_an_unknown_version_or_alias_names_what_exists(use_case):
    _version(use_case, "base")
    with pytest.raises(ConfigError, match="has no version 'champion'"):
        registry.get(use_case, "champion")
    with pytest.raises(ConfigError, match="has no version '42'"):
        registry.get(use_case, "42")


def test_a_versions_files_are_downloaded_once_into_the_cache(use_case):
    version = registry.get(use_case, _version(use_case, "base"))
    folder = registry.local_files(version)
    assert (folder / "info.json").is_file()
    assert registry.local_files(version) == folder
