"""Flow `improve`: curate, fine-tune, evaluate, and promote through the gate.

Deployed in prefect.yaml, it runs when the monitor emits `driftloop.drift.detected`
(debounced, one run at a time) or by hand from the Prefect UI's parameter form.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from driftloop.settings import HomeSettings
from flows.curate import CurateParams, NothingToCurate, curate
from flows.evaluate import EvaluateParams, evaluate
from flows.finetune import FinetuneParams, finetune
from tasks import registry
from tasks.improve import publish, trained_on


class ImproveParams(BaseModel):
    """Which use case to improve, from which traffic, and whether the gate may act."""

    lake: str = Field(
        default_factory=lambda: HomeSettings().lake_uri(), description="Lake URI."
    )
    use_case: str = Field(
        min_length=1,
        max_length=200,
        description="Use case to improve (the logs' model field).",
    )
    monitor_run: str | None = Field(
        None,
        description=(
            "Monitor run id (or 'latest') whose emerging topics the dataset focuses "
            "on; set by the drift event."
        ),
    )
    start: str | None = Field(
        None, description="Curation window start; empty: the end of the last version."
    )
    end: str | None = Field(None, description="Curation window end; empty: now.")
    base: str | None = Field(
        None,
        description="Base model (Hugging Face id or folder); empty: champion's.",
    )
    promote: bool = Field(True, description="Move alias champion when the gate passes.")
    generate: int = Field(
        16,
        ge=0,
        le=1000,
        description="Examples per decisive slice answered by generating.",
    )


@flow(name="improve")
def improve(params: ImproveParams) -> dict[str, Any]:
    """Turn the use case's new traffic into a challenger and let the gate judge it."""
    logger = get_run_logger()

    # Curate: a window with nothing usable ends the run, with the reason, as skipped.
    try:
        (dataset,) = curate(
            CurateParams(
                lake=params.lake,
                model=params.use_case,
                start=params.start,
                end=params.end,
                monitor_run=params.monitor_run,
            )
        )
    except NothingToCurate as exc:
        logger.warning("use_case=%s skipped: %s", params.use_case, exc)
        result = {"use_case": params.use_case, "status": "skipped", "reason": str(exc)}
        publish(result)
        return result

    # Fine-tune, unless a challenger was already trained on this very version.
    challenger = trained_on(params.use_case, dataset["version"])
    if challenger is None:
        trained = finetune(
            FinetuneParams(
                lake=params.lake, dataset=dataset["version"], base=params.base
            )
        )
        challenger = registry.get(params.use_case, trained["version"])
    else:
        logger.info(
            "use_case=%s dataset=%s already trained as version=%s; not training again",
            params.use_case,
            dataset["version"],
            challenger.version,
        )

    # Evaluate and, through the gate only, promote.
    result: dict[str, Any] = {
        "use_case": params.use_case,
        "dataset_version": dataset["version"],
        "dataset_created": dataset["created"],
        "challenger_version": challenger.version,
        "finetune_run_id": challenger.run_id,  # the run that trained it
    }
    if registry.CHAMPION in challenger.aliases:
        result |= {"status": "unchanged", "reason": "the challenger is the champion"}
    else:
        decision = evaluate(
            EvaluateParams(
                lake=params.lake,
                use_case=params.use_case,
                challenger=challenger.version,
                promote=params.promote,
                generate=params.generate,
            )
        )
        result |= {
            "status": "promoted" if decision["promoted"] else decision["decision"],
            "champion_version": registry.get(params.use_case, "champion").version,
            "reasons": decision["reasons"],
            "evaluate_run_id": decision["mlflow_run_id"],
        }
    publish(result)
    logger.info(
        "use_case=%s status=%s dataset=%s challenger=%s",
        params.use_case,
        result["status"],
        result["dataset_version"],
        result["challenger_version"],
    )
    return result
