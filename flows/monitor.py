"""Flow `monitor`: compare the latest window of each use case with its reference."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from driftloop import runners, tracking
from driftloop.settings import HomeSettings
from driftloop.storage import open_store
from tasks import monitor as steps
from tasks.lake import Lake
from tasks.windows import (
    Window,
    load_logs,
    load_window,
    models_in,
    parse_span,
    parse_time,
    stratified_sample,
)

EVENT = "driftloop.drift.detected"


class MonitorParams(BaseModel):
    """Which windows to compare; by default the last 24 hours of every use case."""

    lake: str = Field(
        default_factory=lambda: HomeSettings().lake_uri(), description="Lake URI."
    )
    model: str | None = Field(
        None, description="Use case (the logs' model field); empty: each one found."
    )
    window: str = Field(
        "24h", description="Length of the current window, e.g. 24h, 7d."
    )
    end: str | None = Field(None, description="End of the current window; empty: now.")
    windows: int = Field(
        1, ge=1, le=366, description="Consecutive windows ending at `end` (backfill)."
    )
    reference_days: int = Field(
        7, ge=1, le=365, description="Days before the window used as reference."
    )
    reference_start: str | None = Field(None, description="Explicit reference start.")
    reference_end: str | None = Field(None, description="Explicit reference end.")
    reference_path: str | None = Field(
        None, description="Ad hoc: a log file or folder used as reference."
    )
    current_path: str | None = Field(
        None, description="Ad hoc: a log file or folder used as current window."
    )


@task(cache_policy=NO_CACHE)
def compare(
    reference,
    current,
    model,
    window_label,
    reference_label,
    settings,
    embedder,
    skipped_parts=None,
):
    """Run every check of one use case and window; log it to MLflow and Prefect.

    `skipped_parts` maps lake parts that could not be read for these windows to why:
    the verdict stands on the rest, and says so.
    """
    logger = get_run_logger()
    skipped_parts = skipped_parts or {}
    for path, why in skipped_parts.items():
        logger.warning("model=%s part=%s unreadable, skipped: %s", model, path, why)
    totals = (len(reference), len(current))
    tags = {
        "model": model or "(all)",
        "window": window_label,
        "reference": reference_label,
    }
    with tracking.run(
        "driftloop-monitor", run_name=f"{model} {window_label}", tags=tags
    ) as run:
        short = steps.enough_data(reference, current, settings)
        if short is not None:
            result = steps.summary(
                short,
                window_label,
                reference_label,
                model,
                (0, 0),
                totals,
                None,
                None,
                None,
            )
        else:
            ref = stratified_sample(reference, settings.sample_size, settings.seed)
            cur = stratified_sample(current, settings.sample_size, settings.seed)
            with tempfile.TemporaryDirectory() as tmp:
                html = Path(tmp) / "evidently-drift.html"
                behaviour = steps.behaviour(ref, cur, html)
                embedding = steps.embedding_drift(ref, cur, settings, embedder)
                found = steps.topics(ref, cur, embedding["_vectors"], settings)
                verdict = steps.verdict(embedding, found, settings)
                result = steps.summary(
                    verdict,
                    window_label,
                    reference_label,
                    model,
                    (len(ref), len(cur)),
                    totals,
                    behaviour,
                    embedding,
                    found,
                )
                _log_run(result, html)
        if short is not None:
            _log_run(result, None)
        if skipped_parts:
            import mlflow

            mlflow.log_metric("skipped_parts", len(skipped_parts))
            mlflow.log_dict(skipped_parts, "skipped-parts.json")
        result["skipped_parts"] = sorted(skipped_parts)
        url = tracking.run_url(run)
        result["mlflow_run_id"] = run.info.run_id
    _publish(result, url)
    logger.info(
        "model=%s window=%s status=%s severity=%s p_value=%s new_topics=%d",
        model,
        window_label,
        result["status"],
        result["severity"],
        result["embedding"]["p_value"],
        len(result["new_topics"]),
    )
    return result


def _log_run(result: dict, html: Path | None) -> None:
    import mlflow

    # Step = hours since the epoch at the window's end, so charts line up over time.
    try:
        end = datetime.fromisoformat(result["window"].split("/")[1]).replace(tzinfo=UTC)
        step = int(end.timestamp() // 3600)
    except (IndexError, ValueError):  # ad hoc comparisons of files have no time
        step = 0
    mlflow.log_metrics(steps.as_numbers(result), step=step)
    mlflow.log_dict(result, "summary.json")
    mlflow.log_dict(
        {"emerging": result["new_topics"], "vanished": result["vanished_topics"]},
        "topics.json",
    )
    mlflow.set_tags({"status": result["status"], "severity": result["severity"]})
    if html is not None and html.exists():
        mlflow.log_artifact(str(html))


def _publish(result: dict, url: str | None) -> None:
    from prefect.artifacts import create_markdown_artifact
    from prefect.events import emit_event

    create_markdown_artifact(
        key="drift-summary",
        markdown=steps.markdown(result, url),
        description=f"drift verdict for {result['model']} {result['window']}",
    )
    if result["drift"]:
        emit_event(
            event=EVENT,
            resource={
                "prefect.resource.id": f"driftloop.model.{result['model'] or 'all'}"
            },
            payload={
                "verdict": result["status"],
                "severity": result["severity"],
                "model": result["model"],
                "window": result["window"],
                "reasons": result["reasons"],
                "mlflow_run_id": result["mlflow_run_id"],
            },
        )


def plan(params: MonitorParams) -> list[tuple[Window, Window]]:
    """The (current, reference) window pairs this run compares."""
    span = parse_span(params.window)
    end = parse_time(params.end) if params.end else datetime.now(UTC)
    pairs = []
    for i in reversed(range(params.windows)):
        current = Window(end - span * (i + 1), end - span * i)
        if params.reference_start and params.reference_end:
            reference = Window(
                parse_time(params.reference_start), parse_time(params.reference_end)
            )
        else:
            reference = Window(
                current.start - timedelta(days=params.reference_days), current.start
            )
        pairs.append((current, reference))
    return pairs


def _lake_comparisons(params: MonitorParams, shared: dict) -> Iterator[dict]:
    """The parameters of `compare` for each window pair and use case, loaded lazily."""
    lake = Lake(open_store(params.lake))
    for current_window, reference_window in plan(params):
        lake.unreadable.clear()  # what these two windows could not read, reported
        current_all = load_window(lake, current_window)
        reference_all = load_window(lake, reference_window)
        skipped = dict(lake.unreadable)
        models = [params.model] if params.model else models_in(current_all) or [None]
        for model in models:
            pick = (
                (lambda f: f)
                if model is None
                else (lambda f, m=model: f[f["model"] == m])
            )
            yield {
                "reference": pick(reference_all),
                "current": pick(current_all),
                "model": model,
                "window_label": current_window.label(),
                "reference_label": reference_window.label(),
                "skipped_parts": skipped,
                **shared,
            }


@flow(name="monitor")
def monitor(params: MonitorParams) -> list[dict]:
    """Compare current windows with their references; raise an event on drift."""
    from tasks.embeddings import Embedder

    if bool(params.current_path) != bool(params.reference_path):
        from driftloop.errors import ConfigError

        raise ConfigError(
            "ad hoc monitoring needs both --reference PATH and --current PATH"
        )
    settings = steps.MonitorSettings()
    embedder = Embedder()
    shared = {"settings": settings, "embedder": embedder}
    if params.current_path:
        comparisons = [
            {
                "reference": load_logs(params.reference_path),
                "current": load_logs(params.current_path),
                "model": params.model,
                "window_label": params.current_path,
                "reference_label": params.reference_path,
                **shared,
            }
        ]
    else:
        comparisons = _lake_comparisons(params, shared)
    # On Dask when DRIFTLOOP_DASK_ADDRESS is set, else here, one after another.
    results = runners.run_each(compare, comparisons)
    return json.loads(json.dumps(results, default=str))
