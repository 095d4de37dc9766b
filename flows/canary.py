"""Flow `canary`: the canary's production outcomes against the champion's, then act."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from driftloop import tracking
from driftloop.errors import ConfigError, DriftloopError
from driftloop.settings import HomeSettings
from driftloop.storage import open_store
from tasks import canary as steps
from tasks.lake import Lake
from tasks.windows import Window, load_window, parse_span, parse_time

EXPERIMENT = "driftloop-canary"


class CanaryCheckParams(BaseModel):
    """The window the canaries are judged on, and whether a clear verdict acts."""

    lake: str = Field(
        default_factory=lambda: HomeSettings().lake_uri(), description="Lake URI."
    )
    window: str = Field(
        "24h", max_length=16, description="Length of the window judged, e.g. 24h, 7d."
    )
    end: str | None = Field(
        None, max_length=40, description="End of the window (ISO, UTC); empty: now."
    )
    act: bool = Field(
        True,
        description="Promote the canary or withdraw it when the verdict is clear.",
    )


class CanaryParams(CanaryCheckParams):
    """One use case's canary: the check's parameters and the use case."""

    use_case: str = Field(
        min_length=1, max_length=200, description="Use case (the logs' model field)."
    )


@flow(name="canary")
def canary(params: CanaryParams) -> dict[str, Any]:
    """Judge the canary on the window's traffic, log the evidence, then act on it."""
    import mlflow

    logger = get_run_logger()
    settings = steps.CanarySettings()
    pair = steps.serving_versions(params.use_case)
    if pair is None:
        logger.info("use_case=%s decision=no-canary", params.use_case)
        reason = steps.no_canary_reason(params.use_case)
        return {
            "use_case": params.use_case,
            "decision": "no canary",
            "reasons": [reason],
        }
    candidate, champion = pair

    end = parse_time(params.end) if params.end else datetime.now(UTC)
    window = Window(end - parse_span(params.window), end)
    frame = load_window(Lake(open_store(params.lake)), window, params.use_case)
    arms = steps.split_arms(
        frame, steps.serving_label(candidate), steps.serving_label(champion)
    )
    verdict = steps.decide(arms, settings)

    tags = {
        "use_case": params.use_case,
        "canary_version": candidate.version,
        "champion_version": champion.version,
        "canary_label": arms.canary_label,
        "champion_label": arms.champion_label,
        "window": window.label(),
        "decision": verdict.decision,
    }
    name = f"{params.use_case} canary v{candidate.version} vs v{champion.version}"
    with tracking.run(EXPERIMENT, run_name=name, tags=tags) as run:
        mlflow.log_params({**tags, **settings.model_dump(), "act": params.act})
        mlflow.log_metrics(steps.metrics(verdict, arms))
        if verdict.comparisons:
            mlflow.log_table(
                data=_columns(verdict.table()), artifact_file="canary.json"
            )
        evidence = {"reasons": verdict.reasons, "table": verdict.table()}
        mlflow.log_dict({**evidence, "other_labels": arms.others}, "decision.json")
        moved = None
        if params.act:
            moved = steps.conclude(
                params.use_case, verdict.decision, candidate.version, run.info.run_id
            )
        mlflow.set_tag("acted", str(moved is not None).lower())
        run_id = run.info.run_id
    _publish(verdict, tags, tracking.run_url(run))

    logger.info(
        "use_case=%s canary=%s champion=%s window=%s decision=%s acted=%s",
        params.use_case,
        candidate.version,
        champion.version,
        window.label(),
        verdict.decision,
        moved is not None,
    )
    result = {
        **tags,
        "reasons": verdict.reasons,
        "interactions": {
            "canary": len(arms.canary),
            "champion": len(arms.champion),
            "other_labels": arms.others,
        },
        "canary_share": arms.canary_share(),
        "metrics": verdict.table(),
        "acted": moved is not None,
        "aliases": moved,
        "mlflow_run_id": run_id,
    }
    return json.loads(json.dumps(result, default=float))


@flow(name="canary-check")
def canary_check(params: CanaryCheckParams) -> list[dict[str, Any]]:
    """Judge the canary of every use case that has one; a use case without waits."""
    from tasks import registry

    logger = get_run_logger()
    use_cases = registry.use_cases_with(registry.CANARY)
    logger.info("canaries=%s", ",".join(use_cases) or "none")
    results, failures = [], []
    for use_case in use_cases:
        # One use case's broken registry state must not keep the others' canaries
        # from being judged; the run still fails, naming it, once they all were.
        try:
            results.append(
                canary(
                    CanaryParams(
                        lake=params.lake,
                        use_case=use_case,
                        window=params.window,
                        end=params.end,
                        act=params.act,
                    )
                )
            )
        except DriftloopError as exc:
            logger.error("use_case=%s canary check failed: %s", use_case, exc)
            failures.append(f"{use_case}: {exc}")
    if failures:
        raise ConfigError(
            f"{len(failures)} of {len(use_cases)} canary checks failed (the others "
            "were judged): " + "; ".join(failures)
        )
    return results


def _columns(rows: list[dict]) -> dict[str, list]:
    return {key: [row[key] for row in rows] for key in rows[0]}


def _publish(verdict: steps.Verdict, tags: dict[str, str], url: str | None) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = tracking.artifact_key("canary", tags["use_case"])
    title = (
        f"{verdict.decision}: canary v{tags['canary_version']} vs champion "
        f"v{tags['champion_version']}, {tags['window']}"
    )
    if verdict.comparisons:
        create_table_artifact(
            key=key,
            table=verdict.table(),
            description=title + (f" ({url})" if url else ""),
        )
    create_markdown_artifact(
        key=f"{key}-reasons",
        markdown=f"**{title}**\n\n"
        + "\n".join(f"- {r}" for r in verdict.reasons)
        + (f"\n\n[MLflow run]({url})" if url else ""),
    )
