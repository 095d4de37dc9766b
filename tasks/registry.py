"""The MLflow Model Registry as driftloop uses it: one registered model per use case.

Versions are either a base model (`kind=base`, the full weights) or a LoRA adapter
(`kind=adapter`, tagged with the base version it adapts). Aliases say what serves:
`champion`, `previous-champion` (for rollback), `challenger` (the latest candidate) and
`canary` (a version serving a share of traffic). Promotion is one alias move, made
only after the gate passed; everything before it is preparation that leaves the
serving aliases as they were.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from driftloop import tracking
from driftloop.errors import ConfigError
from driftloop.settings import HomeSettings
from tasks.datasets import dataset_name

log = logging.getLogger(__name__)

PREFIX = "driftloop"
CHAMPION, CHALLENGER = "champion", "challenger"
PREVIOUS, CANARY = "previous-champion", "canary"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS, CANARY)


def model_name(use_case: str | None) -> str:
    """The registered model of a use case: `driftloop-<use case>`."""
    return f"{PREFIX}-{dataset_name(use_case)}"


def _client():
    return tracking.client()


@dataclass(frozen=True)
class Version:
    """One registered version, as the rest of driftloop needs it."""

    name: str
    version: str
    kind: str
    source: str
    run_id: str | None
    tags: dict[str, str]
    aliases: list[str]


def _version(mv: Any) -> Version:
    return Version(
        name=mv.name,
        version=str(mv.version),
        kind=mv.tags.get("kind", "adapter"),
        source=mv.source,
        run_id=mv.run_id,
        tags=dict(mv.tags),
        aliases=list(getattr(mv, "aliases", []) or []),
    )


def register(
    use_case: str | None,
    source: str,
    run_id: str,
    kind: str,
    tags: dict[str, str],
    description: str = "",
) -> Version:
    """Add a version (base or adapter) to the use case's registered model."""
    from mlflow.exceptions import MlflowException

    client = _client()
    name = model_name(use_case)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name,
            tags={"use_case": use_case or ""},
            description=f"Assistant for use case {use_case}: a base model and LoRA "
            "adapters; aliases champion, challenger, previous-champion, canary.",
        )
    mv = client.create_model_version(
        name,
        source=source,
        run_id=run_id,
        tags={"kind": kind, "use_case": use_case or "", **tags},
        description=description,
    )
    return _version(client.get_model_version(name, mv.version))


def get(use_case: str | None, ref: str) -> Version:
    """A version by number or alias; a clear error when there is none."""
    from mlflow.exceptions import MlflowException

    client = _client()
    name = model_name(use_case)
    try:
        if ref.isdigit():
            return _version(client.get_model_version(name, ref))
        return _version(client.get_model_version_by_alias(name, ref))
    except MlflowException:
        known = ", ".join(f"{v.version} {v.aliases}" for v in versions(use_case))
        raise ConfigError(
            f"{name} has no version {ref!r}; versions (with aliases): "
            f"{known or 'none yet: run driftloop finetune first'}"
        ) from None


def find(use_case: str | None, ref: str) -> Version | None:
    """Like `get`, but None when the alias or version does not exist."""
    try:
        return get(use_case, ref)
    except ConfigError:
        return None


def versions(use_case: str | None = None) -> list[Version]:
    """Every version of one use case's model (or of all driftloop models)."""
    client = _client()
    query = f"name='{model_name(use_case)}'" if use_case is not None else None
    found = [_version(mv) for mv in client.search_model_versions(query)]
    if use_case is None:
        found = [v for v in found if v.name.startswith(f"{PREFIX}-")]
    return sorted(found, key=lambda v: (v.name, int(v.version)))


def use_cases_with(alias: str) -> list[str]:
    """The use cases whose registered model has a version with this alias."""
    found = []
    for model in _client().search_registered_models(f"name LIKE '{PREFIX}-%'"):
        if alias in (model.aliases or {}):
            tags = model.tags or {}
            found.append(tags.get("use_case") or model.name.removeprefix(f"{PREFIX}-"))
    return sorted(found)


def set_alias(use_case: str | None, alias: str, version: str) -> None:
    _client().set_registered_model_alias(model_name(use_case), alias, version)
    log.info(
        "registry model=%s alias=%s version=%s", model_name(use_case), alias, version
    )


def promote(use_case: str | None, version: str) -> dict[str, str | None]:
    """Make `version` the champion; the old one becomes previous-champion."""
    old = find(use_case, CHAMPION)
    if old is not None and old.version == version:
        return {"champion": version, "previous-champion": None}
    if old is not None:
        set_alias(use_case, PREVIOUS, old.version)
    set_alias(use_case, CHAMPION, version)  # the one move that changes what serves
    client = _client()
    for alias in (CHALLENGER, CANARY):
        current = find(use_case, alias)
        if current is not None and current.version == version:
            client.delete_registered_model_alias(model_name(use_case), alias)
    return {"champion": version, "previous-champion": old.version if old else None}


def rollback(use_case: str | None) -> dict[str, str]:
    """Swap champion and previous-champion back."""
    previous = find(use_case, PREVIOUS)
    current = find(use_case, CHAMPION)
    if previous is None or current is None:
        raise ConfigError(
            f"{model_name(use_case)} has no previous-champion to roll back to; a "
            "rollback needs a promotion before it"
        )
    set_alias(use_case, CHAMPION, previous.version)
    set_alias(use_case, PREVIOUS, current.version)
    return {"champion": previous.version, "previous-champion": current.version}


def canary(use_case: str | None, version: str, share: float) -> dict[str, Any]:
    """Point alias `canary` at a version, with the share of traffic it should get.

    The version is tagged with the `model_version` label its answers must log (tag
    `serving_label`, kept when already set), so the canary verdict can find them.
    """
    from tasks.canary import SERVING_LABEL, serving_label

    if not 0 < share < 100:
        raise ConfigError(
            f"canary share {share} is not a percentage between 0 and 100 (exclusive)"
        )
    found = get(use_case, version)
    client = _client()
    name = model_name(use_case)
    client.set_model_version_tag(name, version, "canary_share", str(share))
    label = serving_label(found)
    client.set_model_version_tag(name, version, SERVING_LABEL, label)
    set_alias(use_case, CANARY, version)
    log.info("registry model=%s canary=%s serving_label=%s", name, version, label)
    return {"canary": version, "traffic_share": share}


def local_files(version: Version) -> Path:
    """Download a version's files once into the local cache; return their folder."""
    import mlflow

    cache = HomeSettings().home.expanduser().absolute() / "cache" / "models"
    folder = cache / version.name / version.version
    if not (folder / ".complete").exists():
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        mlflow.artifacts.download_artifacts(
            artifact_uri=version.source, dst_path=str(folder)
        )
        (folder / ".complete").touch()
    children = [p for p in folder.iterdir() if p.is_dir()]
    return children[0] if len(children) == 1 else folder


def load(use_case: str | None, version: Version, device: str = "auto"):
    """Load a version as (model, tokenizer): a base, or a base with its adapter."""
    from tasks.finetune import load_adapter
    from tasks.lm import load_model

    if version.kind == "base":
        return load_model(str(local_files(version)), device)
    base = get(use_case, version.tags["base_version"])
    return load_adapter(str(local_files(base)), local_files(version), device)
