"""What the `improve` flow needs beyond its stages: reuse, a report, a trigger."""

from __future__ import annotations

from typing import Any

from driftloop import tracking
from tasks import registry


def trained_on(use_case: str, dataset_version: str) -> registry.Version | None:
    """The newest adapter already trained on this dataset version, if any."""
    found = [
        v
        for v in registry.versions(use_case)
        if v.kind == "adapter" and v.tags.get("dataset_version") == dataset_version
    ]
    return found[-1] if found else None


def markdown(result: dict[str, Any]) -> str:
    """The run's outcome as the Prefect UI shows it."""
    lines = [f"# improve {result['use_case']}: {result['status']}", ""]
    for key in (
        "reason",
        "dataset_version",
        "challenger_version",
        "champion_version",
        "finetune_run_id",
        "evaluate_run_id",
    ):
        if result.get(key):
            line = f"- {key.replace('_', ' ')}: `{result[key]}`"
            link = tracking.run_link(result[key]) if key.endswith("run_id") else None
            lines.append(f"{line} ([MLflow]({link}))" if link else line)
    lines += [f"- {reason}" for reason in result.get("reasons", [])]
    return "\n".join(lines)


def publish(result: dict[str, Any]) -> None:
    """Leave the outcome on the flow run as a markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        key=tracking.artifact_key("improve", result["use_case"]),
        markdown=markdown(result),
        description=f"improve {result['use_case']}: {result['status']}",
    )


DEPLOYMENT = "improve/improve"


def trigger(params: Any, idempotency_key: str | None = None) -> dict[str, Any]:
    """Start the `improve` deployment; with a key already used, start nothing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterIdempotencyKey,
    )
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from driftloop.errors import ConfigError

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(DEPLOYMENT)
        except ObjectNotFound:
            raise ConfigError(
                f"the Prefect API at {client.api_url} has no deployment {DEPLOYMENT}; "
                "run `driftloop up` (or `prefect deploy --all`) first"
            ) from None
        known = []
        if idempotency_key:
            known = client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=[DEPLOYMENT.split("/")[1]])
                ),
                flow_run_filter=FlowRunFilter(
                    idempotency_key=FlowRunFilterIdempotencyKey(any_=[idempotency_key])
                ),
            )
    run = run_deployment(
        DEPLOYMENT,
        parameters={"params": params.model_dump()},
        idempotency_key=idempotency_key,
        timeout=0,
        as_subflow=False,
    )
    return {
        "flow_run_id": str(run.id),
        "flow_run_name": run.name,
        "state": run.state.name if run.state else "",
        "created": not known,
    }
