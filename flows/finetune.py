"""Flow `finetune`: train a LoRA adapter on a dataset version, register a challenger."""

from __future__ import annotations

import hashlib
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from driftloop import tracking
from driftloop.settings import HomeSettings
from driftloop.storage import open_store
from tasks import registry
from tasks.datasets import DatasetStore, VersionRef
from tasks.lake import Lake

EXPERIMENT = "driftloop-finetune"


class FinetuneParams(BaseModel):
    """Which dataset version to train on, and from which base model."""

    lake: str = Field(
        default_factory=lambda: HomeSettings().lake_uri(), description="Lake URI."
    )
    dataset: str = Field(description="Dataset version (or a unique prefix of it).")
    base: str | None = Field(
        None,
        description=(
            "Base model: a Hugging Face id or local folder. Empty: the champion's "
            "base, or, for a use case without one, a small model driftloop "
            "pre-trains on the traffic before the dataset's window."
        ),
    )


def _write_chats(store, ref: VersionRef, folder: Path) -> dict[str, Path]:
    paths = {}
    for split in ("train", "validation"):
        paths[split] = folder / f"{split}.jsonl"
        paths[split].write_bytes(store.read_bytes(f"{ref.key}/{split}.jsonl"))
    return paths


def _files_digest(folder: Path) -> str:
    total = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")):
        with open(path, "rb") as handle:
            total.update(hashlib.file_digest(handle, "sha256").digest())
    return total.hexdigest()[:12]


def base_version(lake: Lake, ref: VersionRef, base: str | None) -> registry.Version:
    """The registered base to adapt: given, the champion's, or pre-trained here."""
    use_case = ref.card["model"]
    if base is not None:
        return _external_base(use_case, base)
    champion = registry.find(use_case, registry.CHAMPION)
    if champion is not None:
        if champion.kind == "base":
            return champion
        return registry.get(use_case, champion.tags["base_version"])
    return _pretrain_base(lake, ref)


def _external_base(use_case: str, base: str) -> registry.Version:
    """Register a Hugging Face id or folder once as a base version."""
    import mlflow

    from tasks.lm import load_model

    for version in registry.versions(use_case):
        if version.kind == "base" and version.tags.get("base_model") == base:
            return version
    load_model(base)  # fails early, with the fix, when the base cannot be found
    with tracking.run(
        EXPERIMENT, run_name=f"base {base}", tags={"kind": "base"}
    ) as run:
        mlflow.log_dict({"base_model": base}, "base/base.json")
        version = registry.register(
            use_case,
            f"{run.info.artifact_uri}/base",
            run.info.run_id,
            "base",
            {"base_model": base, "weights": "external"},
        )
    if registry.find(use_case, registry.CHAMPION) is None:
        registry.set_alias(use_case, registry.CHAMPION, version.version)
    return version


def _pretrain_base(lake: Lake, ref: VersionRef) -> registry.Version:
    """Pre-train the offline base on the use case's traffic; it becomes champion."""
    import mlflow

    from tasks.lm import BaseModelSettings, pretrain
    from tasks.reference import reference_chats

    logger = get_run_logger()
    use_case = ref.card["model"]
    settings = BaseModelSettings()
    chats, window = reference_chats(lake, ref, settings.max_examples)
    logger.info(
        "use_case=%s base=none pretraining a small base on %d chats of %s",
        use_case,
        len(chats),
        window,
    )
    tags = {"kind": "base", "use_case": use_case, "window": window}
    with tracking.run(EXPERIMENT, run_name=f"base {use_case}", tags=tags) as run:
        mlflow.log_params({f"base.{k}": v for k, v in settings.model_dump().items()})
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model"

            def on_step(row: dict[str, Any]) -> None:
                if "loss" in row:
                    mlflow.log_metric("pretrain_loss", row["loss"], step=row["step"])

            result = pretrain(chats, out, settings, on_step=on_step)
            mlflow.log_metrics({k: float(v) for k, v in result.items() if _number(v)})
            mlflow.log_artifacts(str(out), "model")
            revision = _files_digest(out)
        version = registry.register(
            use_case,
            f"{run.info.artifact_uri}/model",
            run.info.run_id,
            "base",
            {
                "base_model": "driftloop-tiny",
                "base_revision": revision,
                "window": window,
            },
            description="Small causal LM pre-trained by driftloop on this use "
            f"case's traffic of {window}.",
        )
    registry.set_alias(use_case, registry.CHAMPION, version.version)
    return version


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@flow(name="finetune")
def finetune(params: FinetuneParams) -> dict[str, Any]:
    """Train a LoRA adapter on a dataset version and register it as challenger."""
    import mlflow

    from tasks.finetune import FinetuneSettings, run_training

    logger = get_run_logger()
    lake = Lake(open_store(params.lake))
    datasets = DatasetStore(lake.store)
    ref = datasets.find(params.dataset)
    use_case = ref.card["model"]
    settings = FinetuneSettings()
    base = base_version(lake, ref, params.base)
    base_model = base.tags.get("base_model", "")
    tags = {
        "use_case": use_case,
        "dataset_version": ref.version,
        "base_version": base.version,
        "base_model": base_model,
        "monitor_run": ref.card.get("monitor_run") or "",
        "window": f"{ref.card['window']['start']}/{ref.card['window']['end']}",
    }
    name = f"{use_case} {ref.version}"
    mlflow.enable_system_metrics_logging()
    try:
        with tracking.run(EXPERIMENT, run_name=name, tags=tags) as run:
            mlflow.log_params(
                {
                    "base_model": base_model,
                    "base_version": base.version,
                    "base_revision": base.tags.get("base_revision", ""),
                    "dataset_version": ref.version,
                    "dataset_digest": ref.version,
                    "dataset_examples": ref.card["examples"],
                    **{f"lora.{k}": v for k, v in settings.model_dump().items()},
                }
            )
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                chats = _write_chats(lake.store, ref, work)
                spec = {
                    "base": _base_path(use_case, base),
                    "train_path": str(chats["train"]),
                    "validation_path": str(chats["validation"]),
                    "out_dir": str(work / "out"),
                    "settings": settings.model_dump(),
                }
                result = run_training(spec, work, settings.timeout_s)
                for row in result["metrics"]:
                    step = int(row.get("step", 0))
                    for key in ("train_loss", "validation_loss"):
                        if key in row:
                            mlflow.log_metric(key, row[key], step=step)
                mlflow.log_metrics(
                    {f"final.{k}": float(v) for k, v in result.items() if _number(v)}
                )
                mlflow.log_artifacts(str(work / "out" / "adapter"), "adapter")
            version = registry.register(
                use_case,
                f"{run.info.artifact_uri}/adapter",
                run.info.run_id,
                "adapter",
                tags,
                description=f"LoRA adapter on dataset {ref.version}.",
            )
            # Registered first, aliased last: a failure before here moves no alias.
            registry.set_alias(use_case, registry.CHALLENGER, version.version)
            run_id = run.info.run_id
    finally:
        mlflow.disable_system_metrics_logging()
    logger.info(
        "use_case=%s challenger=%s dataset=%s base=%s train_loss=%.4f "
        "validation_loss=%.4f tokens_per_s=%.0f",
        use_case,
        version.version,
        ref.version,
        base.version,
        result.get("train_loss", float("nan")),
        result.get("validation_loss", float("nan")),
        result.get("tokens_per_s", 0.0),
    )
    return json.loads(
        json.dumps(
            {
                "use_case": use_case,
                "model": version.name,
                "version": version.version,
                "alias": registry.CHALLENGER,
                "dataset_version": ref.version,
                "base_version": base.version,
                "mlflow_run_id": run_id,
                "train_loss": result.get("train_loss"),
                "validation_loss": result.get("validation_loss"),
                "tokens_per_s": result.get("tokens_per_s"),
                "finished_at": datetime.now(UTC).isoformat(),
            },
            default=str,
        )
    )


def _base_path(use_case: str, base: registry.Version) -> str:
    if base.tags.get("weights") == "external":
        return base.tags["base_model"]
    return str(registry.local_files(base))
