"""Focus curation on what a monitor run found: rows on its emerging topics.

A row is on an emerging topic when its prompt is novel against the monitor run's
reference sample (the same calibrated test the monitor ran) and lies closer to one of
the run's emerging-topic examples than to nothing at all. The reference sample is
drawn exactly as the monitor drew it, so its vectors come from the embedding cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from driftloop import tracking
from driftloop.errors import ConfigError
from tasks.lake import Lake
from tasks.windows import Window, load_window, parse_time, stratified_sample

MONITOR_EXPERIMENT = "driftloop-monitor"
# Cosine from an emerging topic's nearest example that still counts as that topic; the
# monitor clusters at a cosine distance of 0.8, so its topics are loose by design.
TOPIC_SIMILARITY = 0.5


@dataclass(frozen=True)
class Focus:
    """A monitor run's verdict, as curation needs it."""

    run_id: str
    model: str | None
    window: Window
    reference: Window
    topics: list[dict]
    sample_size: int


def _window(label: str) -> Window:
    start, end = label.split("/")
    return Window(parse_time(start), parse_time(end))


def load_focus(run: str, model: str | None) -> Focus | None:
    """Read a monitor run by id, or `latest`: the newest drifted run of `model`."""
    import mlflow
    from mlflow.tracking import MlflowClient

    tracking.experiment_id(MONITOR_EXPERIMENT)
    client = MlflowClient()
    if run == "latest":
        experiment = mlflow.get_experiment_by_name(MONITOR_EXPERIMENT)
        query = "tags.status = 'drift'"
        if model:
            query += f" and tags.model = '{model}'"
        found = client.search_runs(
            [experiment.experiment_id],
            query,
            order_by=["tags.window DESC"],
            max_results=1,
        )
        if not found:
            return None
        record = found[0]
    else:
        try:
            record = client.get_run(run)
        except mlflow.exceptions.MlflowException:
            raise ConfigError(
                f"monitor run {run!r} is not in the MLflow store "
                f"{tracking.strip_credentials(tracking.tracking_uri())}; pass a run "
                "id from `driftloop monitor --json` (mlflow_run_id) or 'latest'"
            ) from None
    tags = record.data.tags
    if "window" not in tags or "reference" not in tags:
        raise ConfigError(
            f"run {record.info.run_id} is not a driftloop monitor run over the lake "
            "(it has no window and reference tags)"
        )
    if model and tags.get("model") not in (model, "(all)"):
        return None
    summary = mlflow.artifacts.load_dict(f"runs:/{record.info.run_id}/summary.json")
    return Focus(
        run_id=record.info.run_id,
        model=tags.get("model"),
        window=_window(tags["window"]),
        reference=_window(tags["reference"]),
        topics=summary.get("new_topics", []),
        sample_size=int(summary.get("sample", {}).get("reference") or 0),
    )


def reference_vectors(lake: Lake, focus: Focus, model: str | None, embedder):
    """Embed the reference sample the monitor run drew (cache hits, normally)."""
    from tasks.monitor import MonitorSettings

    frame = load_window(lake, focus.reference, model)
    size = focus.sample_size or MonitorSettings().sample_size
    sample = stratified_sample(frame, max(size, 1), MonitorSettings().seed)
    return embedder.encode(sample["prompt"].fillna("").tolist())


def emerging(
    prompts: np.ndarray,
    reference: np.ndarray,
    topic_examples: np.ndarray,
) -> np.ndarray:
    """Which prompts are novel against the reference and near an emerging topic."""
    from tasks.topics import novel_mask

    if len(prompts) == 0 or len(reference) < 2 or len(topic_examples) == 0:
        return np.zeros(len(prompts), dtype=bool)
    near = (prompts @ topic_examples.T).max(axis=1) >= TOPIC_SIMILARITY
    return novel_mask(reference, prompts) & near


def since(focus: Focus) -> datetime:
    """Rows from the start of the drifted window on can belong to its topics."""
    return focus.window.start
