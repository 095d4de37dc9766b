"""Flow `curate`: turn a window of production traffic into a versioned dataset."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from driftloop import tracking
from driftloop.errors import DriftloopError
from driftloop.settings import HomeSettings
from driftloop.storage import open_store
from evals import golden
from tasks import filters, focus, split
from tasks.curation import (
    CANDIDATE_COLUMNS,
    CurateSettings,
    quality_scores,
    queue_id,
    read_reviewed,
    review_queue,
    select,
)
from tasks.datasets import (
    DatasetStore,
    VersionRef,
    content_version,
    dataset_name,
    render_card,
)
from tasks.lake import Lake
from tasks.pii import Scrubber
from tasks.windows import Window, load_window, parse_time

EXPERIMENT = "driftloop-curate"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class NothingToCurate(DriftloopError):
    """A window gave no example: empty, or every candidate was filtered out."""


class CurateParams(BaseModel):
    """Which traffic to curate; by default everything newer than the last version."""

    lake: str = Field(
        default_factory=lambda: HomeSettings().lake_uri(), description="Lake URI."
    )
    model: str | None = Field(
        None, description="Use case (the logs' model field); empty: each one found."
    )
    start: str | None = Field(
        None, description="Window start; empty: the end of the latest version."
    )
    end: str | None = Field(None, description="Window end (exclusive); empty: now.")
    monitor_run: str | None = Field(
        None,
        description="Monitor run id (or 'latest') whose emerging topics get priority.",
    )
    reviewed: str | None = Field(
        None, description="A labelled review queue file (.csv or .parquet) to add."
    )


class Stages:
    """What each stage kept and removed, in order, for the card and MLflow."""

    def __init__(self) -> None:
        self.after: dict[str, int] = {}
        self.removed: dict[str, int] = {}
        self.reasons: dict[str, dict[str, int]] = {}

    def keep(
        self,
        name: str,
        frame: pd.DataFrame,
        mask: np.ndarray,
        reasons: Counter | None = None,
    ) -> pd.DataFrame:
        kept = frame[mask].reset_index(drop=True)
        self.after[name] = len(kept)
        self.removed[name] = len(frame) - len(kept)
        if reasons:
            self.reasons[name] = dict(reasons)
        return kept

    def count(self, name: str, frame: pd.DataFrame) -> None:
        self.after[name] = len(frame)


@task(cache_policy=NO_CACHE)
def curate_one(
    lake: Lake,
    model: str | None,
    params: CurateParams,
    settings: CurateSettings,
    embedder,
) -> dict[str, Any]:
    """Curate one use case's window; a use case with nothing to curate is skipped."""
    try:
        return _curate(lake, model, params, settings, embedder)
    except NothingToCurate as exc:
        # Reported by the flow, which fails only when no use case gave a version.
        return {"model": model, "skipped": str(exc)}


def _curate(
    lake: Lake,
    model: str | None,
    params: CurateParams,
    settings: CurateSettings,
    embedder,
) -> dict[str, Any]:
    logger = get_run_logger()
    datasets = DatasetStore(lake.store)
    name = dataset_name(model)
    end = parse_time(params.end) if params.end else datetime.now(UTC)
    start = parse_time(params.start) if params.start else _resume(datasets, name, end)
    window = Window(start, end)
    parent = datasets.parent(name, start)
    frame = _canonical(load_window(lake, window, model))
    reviewed = _reviewed(params.reviewed, model, settings)
    if frame.empty and reviewed.empty:
        raise NothingToCurate(
            f"no interactions of {model or 'any use case'} in {window.label()} in "
            f"{lake.uri}, so there is nothing new to curate; ingest newer logs or "
            "pass --start/--end"
        )
    stages = Stages()
    stages.count("window", frame)

    # Select: corrections, feedback, emerging topics, good scores; the rest to review.
    monitor = (
        focus.load_focus(params.monitor_run, model) if params.monitor_run else None
    )
    drift = _drift(frame, lake, monitor, model, settings, embedder)
    candidates, review = select(frame, settings, drift)
    if candidates.empty and reviewed.empty:
        raise NothingToCurate(
            f"none of the {len(frame)} interactions of {model or 'any use case'} in "
            f"{window.label()} carries evidence to learn from: no correction, no "
            "positive feedback, no quality score or successful task outcome at or "
            f"above {settings.min_quality_score}; {len(review)} went to the review "
            "queue. Log feedback or outcomes, or label the queue and pass --reviewed"
        )
    scrubber = Scrubber(settings.pii_backend)
    queue = review_queue(review, scrubber.scrub, settings.review_limit)
    if not reviewed.empty:
        candidates = pd.concat([candidates, reviewed], ignore_index=True)
    stages.count("selected", candidates)

    # Filter the new candidates, then mix in the replay of the parent version.
    tombstones = datasets.tombstones()
    candidates = stages.keep(
        "forget", candidates, filters.forget(candidates, tombstones)
    )
    candidates, safe, pii = filters.scrub(candidates, scrubber)
    candidates = stages.keep("pii", candidates, safe)
    candidates = stages.keep("injection", candidates, *filters.injection(candidates))
    candidates = stages.keep(
        "quality", candidates, *filters.quality(candidates, settings)
    )
    replay = _replay(datasets, parent, len(candidates), settings, tombstones)
    if not replay.empty:
        replay, replay_safe, _ = filters.scrub(replay, scrubber)
        candidates = pd.concat([candidates, replay[replay_safe]], ignore_index=True)
    stages.count("replay", candidates)

    # Deduplicate, decontaminate, cap and balance.
    candidates = stages.keep(
        "exact_duplicate", candidates, filters.exact_duplicates(candidates)
    )
    prompts = embedder.encode(candidates["prompt"].tolist())
    targets = embedder.encode(candidates["target"].tolist())
    near = filters.near_duplicates(
        candidates, prompts, targets, settings.near_duplicate
    )
    candidates, prompts = stages.keep("near_duplicate", candidates, near), prompts[near]
    evaluation = _evaluation_prompts(name, parent, datasets)
    clean = filters.decontaminate(
        candidates,
        prompts,
        evaluation,
        embedder.encode(evaluation),
        settings.decontamination,
    )
    candidates, prompts = (
        stages.keep("decontaminate", candidates, clean),
        prompts[clean],
    )
    capped = filters.cap_per_user(candidates, settings.max_per_user)
    candidates, prompts = stages.keep("user_cap", candidates, capped), prompts[capped]
    candidates["topic"] = filters.label_topics(candidates, prompts, settings.seed)
    balanced = filters.balance_topics(candidates, settings.max_topic_share)
    candidates, prompts = (
        stages.keep("topic_balance", candidates, balanced),
        prompts[balanced],
    )
    if candidates.empty:
        raise NothingToCurate(
            f"every candidate of {model or 'any use case'} in {window.label()} was "
            f"filtered out (stages: {stages.after}); nothing was registered. Loosen "
            "DRIFTLOOP_CURATE_* thresholds or curate a longer window"
        )

    # Split without leakage and version by content.
    examples = _examples(candidates, model)
    labels = split.groups(examples, prompts, settings.split_similarity)
    examples["split"] = split.assign(
        examples,
        labels,
        settings.validation_share,
        settings.seed,
        settings.drift_validation_share,
    )
    config = settings.fingerprint() | {"golden": golden.digest(name), "model": model}
    version = content_version(examples, config)
    card = _card(
        name, version, model, window, frame, parent, monitor, examples, stages, pii
    )
    card |= {"config": config, "lake": tracking.strip_credentials(lake.uri)}
    card["review_queue"] = _write_queue(lake, name, queue, len(review))
    path = datasets.uri(name, version)
    result = {
        "name": name,
        "model": model,
        "version": version,
        "path": path,
        "examples": len(examples),
        "stages": stages.after,
        "parent": card["parent"],
        "review_queue": card["review_queue"],
    }
    if datasets.exists(name, version):
        logger.info("dataset=%s version=%s created=false (same content)", name, version)
        return result | {"created": False}
    run_id = _register(datasets, name, version, examples, card, window, monitor)
    logger.info(
        "dataset=%s version=%s examples=%d train=%d validation=%d parent=%s",
        name,
        version,
        len(examples),
        card["splits"]["train"],
        card["splits"]["validation"],
        card["parent"],
    )
    return result | {"created": True, "mlflow_run_id": run_id}


def _resume(datasets: DatasetStore, name: str, end: datetime) -> datetime:
    """Start where the last version before `end` ended: everything not yet curated.

    Versions whose window ends at `end` or later are not counted, so curating a window
    again (same end) starts where it started before and finds the same version.
    """
    ends = [
        datetime.fromisoformat(r.card["window"]["end"]) for r in datasets.versions(name)
    ]
    return max((e for e in ends if e < end), default=EPOCH)


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    # The lake returns parts in any order; a fixed order makes every sample repeatable.
    return frame.sort_values(["timestamp", "request_id"], kind="stable").reset_index(
        drop=True
    )


def _reviewed(path: str | None, model: str | None, settings) -> pd.DataFrame:
    if not path:
        return pd.DataFrame()
    rows = read_reviewed(Path(path), settings)
    return rows if model is None else rows[rows["model"] == model]


def _drift(frame, lake, monitor, model, settings, embedder) -> np.ndarray:
    """Mark rows on the monitor run's emerging topics; only rows that may train."""
    mask = np.zeros(len(frame), dtype=bool)
    if monitor is None or not monitor.topics or frame.empty:
        return mask
    eligible = (frame["timestamp"] >= focus.since(monitor)).to_numpy() & (
        (quality_scores(frame, settings) >= settings.min_quality_score).to_numpy()
        | frame["feedback"].eq(1).fillna(False).to_numpy(bool)
        | frame["corrected_response"].notna().to_numpy()
    )
    rows = np.flatnonzero(eligible)
    if len(rows) == 0:
        return mask
    scrubber = Scrubber("regex")
    prompts = embedder.encode([scrubber.scrub(p) for p in frame["prompt"].iloc[rows]])
    reference = focus.reference_vectors(lake, monitor, model, embedder)
    examples = [e for t in monitor.topics for e in t.get("examples", [])]
    mask[rows] = focus.emerging(prompts, reference, embedder.encode(examples))
    return mask


def _replay(
    datasets: DatasetStore,
    parent: VersionRef | None,
    new: int,
    settings: CurateSettings,
    tombstones: frozenset[str],
) -> pd.DataFrame:
    """A seeded share of the parent's train split, so old skills are not forgotten."""
    empty = pd.DataFrame(columns=CANDIDATE_COLUMNS)
    if parent is None or settings.replay_share == 0 or new == 0:
        return empty
    old = datasets.examples(parent)
    old = old[(old["split"] == "train") & ~old["user_hash"].isin(tombstones)]
    wanted = round(new * settings.replay_share / (1 - settings.replay_share))
    if old.empty or wanted == 0:
        return empty
    old = old.sort_values("example_id").sample(
        n=min(wanted, len(old)), random_state=settings.seed
    )
    conversations = [json.loads(m)[:-1] for m in old["messages"]]
    return pd.DataFrame(
        {
            "request_id": old["request_id"].to_numpy(),
            "model": old["model"].to_numpy(),
            "timestamp": old["timestamp"].to_numpy(),
            "session_id": old["session_id"].to_numpy(),
            "user_hash": old["user_hash"].to_numpy(),
            "source": "replay",
            "topic": old["topic"].to_numpy(),
            "drift": old["drift"].to_numpy(bool),
            "conversation": conversations,
            "prompt": old["prompt"].to_numpy(),
            "target": old["target"].to_numpy(),
            "origin": old["origin"].to_numpy(),
            "origin_line": old["origin_line"].to_numpy(),
        }
    ).reset_index(drop=True)


def _evaluation_prompts(
    name: str, parent: VersionRef | None, datasets: DatasetStore
) -> list[str]:
    """Prompts no training example may copy: the golden set and held-out examples."""
    prompts = [golden.prompt_of(e) for e in golden.load_golden(name)]
    if parent is not None:
        old = datasets.examples(parent)
        prompts += old.loc[old["split"] == "validation", "prompt"].tolist()
    return prompts


def _examples(candidates: pd.DataFrame, model: str | None) -> pd.DataFrame:
    """The dataset's rows: chat messages with the target as the last turn."""
    messages = [
        json.dumps([*c, {"role": "assistant", "content": t}], ensure_ascii=False)
        for c, t in zip(candidates["conversation"], candidates["target"], strict=True)
    ]
    out = candidates.drop(columns=["conversation"]).assign(messages=messages)
    out["model"] = out["model"].fillna(model or "")
    out["example_id"] = [
        _hash(f"{m}\x1f{r}")[:16]
        for m, r in zip(out["model"], out["request_id"], strict=True)
    ]
    # Content only: a replayed example is the same example, whatever its source now.
    out["content_hash"] = [_hash(m) for m in out["messages"]]
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    out["origin"] = out["origin"].map(lambda o: tracking.strip_credentials(str(o)))
    out["origin_line"] = out["origin_line"].astype("int64")
    out["drift"] = out["drift"].astype(bool)
    return out.sort_values("example_id", kind="stable").reset_index(drop=True)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _card(name, version, model, window, frame, parent, monitor, examples, stages, pii):
    splits = examples["split"].value_counts()
    return {
        "name": name,
        "version": version,
        "model": model,
        "created_at": datetime.now(UTC).isoformat(),
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        "interactions": len(frame),
        "parent": parent.version if parent else None,
        "monitor_run": monitor.run_id if monitor else None,
        "examples": len(examples),
        "splits": {s: int(splits.get(s, 0)) for s in ("train", "validation")},
        "stages": stages.after,
        "removed": stages.removed,
        "reasons": stages.reasons,
        "pii_replaced": dict(pii),
        "sources": filters.counts(examples, "source"),
        "topics": filters.counts(examples, "topic"),
        "drift_examples": {
            s: int(((examples["split"] == s) & examples["drift"]).sum())
            for s in ("train", "validation")
        },
    }


def _write_queue(lake: Lake, name: str, queue: pd.DataFrame, total: int) -> dict:
    """Write the review queue as Parquet and CSV; say how many rows did not fit."""
    info = {"rows": len(queue), "overflow": total - len(queue), "path": None}
    if queue.empty:
        return info
    import io

    key = f"review/{name}/queue-{queue_id(queue)}"
    sink = io.BytesIO()
    queue.to_parquet(sink, index=False)
    lake.store.write_bytes(f"{key}.parquet", sink.getvalue())
    lake.store.write_bytes(f"{key}.csv", queue.to_csv(index=False).encode())
    info["path"] = lake.store.describe(f"{key}.csv")
    return info


def _register(datasets, name, version, examples, card, window, monitor) -> str:
    """Log the version to MLflow as the run's input, then commit its files."""
    import mlflow

    tags = {
        "dataset": name,
        "dataset_version": version,
        "window": window.label(),
        "monitor_run": monitor.run_id if monitor else "",
        "parent_version": card["parent"] or "",
    }
    with tracking.run(EXPERIMENT, run_name=f"{name} {version}", tags=tags) as run:
        card["mlflow_run_id"] = run.info.run_id
        mlflow.log_params(_params(card["config"]))
        mlflow.log_metrics(_metrics(card))
        source = tracking.strip_credentials(datasets.uri(name, version))
        with warnings.catch_warnings():
            # MLflow warns that a folder path fits two source types (it picks the
            # local one, which is right) and that int columns cannot hold nulls
            # (ours have none); neither is actionable for a user.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                examples.drop(columns=["messages"]),
                source=source,
                name=name,
                digest=version,
                targets="target",
            )
            mlflow.log_input(dataset, context="training")
        path = datasets.write(name, version, examples, card)
        mlflow.log_dict(card, "card.json")
        mlflow.log_text(render_card(card), "card.md")
        _publish(card, path, tracking.run_url(run))
        return run.info.run_id


def _params(config: dict[str, Any]) -> dict[str, str]:
    return {
        k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in config.items()
    }


def _metrics(card: dict[str, Any]) -> dict[str, float]:
    metrics = {f"stage.{k}": float(v) for k, v in card["stages"].items()}
    metrics |= {f"removed.{k}": float(v) for k, v in card["removed"].items()}
    metrics |= {f"source.{k}": float(v) for k, v in card["sources"].items()}
    metrics |= {f"pii.{k}": float(v) for k, v in card["pii_replaced"].items()}
    metrics |= {f"split.{k}": float(v) for k, v in card["splits"].items()}
    metrics["examples"] = float(card["examples"])
    return metrics


def _publish(card: dict[str, Any], path: str, url: str | None) -> None:
    from prefect.artifacts import create_markdown_artifact

    link = f"\n[MLflow run]({url})\n" if url else ""
    create_markdown_artifact(
        key=tracking.artifact_key("dataset-card", card["name"]),
        markdown=render_card(card) + f"\nFiles: `{path}`\n" + link,
        description=f"dataset {card['name']} version {card['version']}",
    )


@flow(name="curate")
def curate(params: CurateParams) -> list[dict[str, Any]]:
    """Curate each use case's new traffic into a versioned, card-carrying dataset."""
    from tasks.embeddings import Embedder

    logger = get_run_logger()
    lake = Lake(open_store(params.lake))
    settings = CurateSettings()
    embedder = Embedder()
    models = [params.model] if params.model else _models(lake, params)
    if not models:
        raise NothingToCurate(
            f"the lake {lake.uri} holds no interactions between "
            f"{params.start or 'its start'} and {params.end or 'now'}, so there is "
            "nothing new to curate; ingest newer logs or pass --start/--end"
        )
    results, skipped = [], []
    for model in models:
        result = curate_one(lake, model, params, settings, embedder)
        if "skipped" in result:
            logger.warning("model=%s skipped: %s", model, result["skipped"])
            skipped.append(result["skipped"])
        else:
            results.append(result)
    if not results:
        raise NothingToCurate("; ".join(skipped))
    return json.loads(json.dumps(results, default=str))


def _models(lake: Lake, params: CurateParams) -> list[str | None]:
    start = parse_time(params.start).date() if params.start else None
    end = parse_time(params.end).date() if params.end else None
    names = lake.read_interactions(start, end, columns=["model"])["model"]
    found = sorted({m for m in names.to_pylist() if m})
    return found or ([None] if len(names) else [])
