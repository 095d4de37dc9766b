"""Follow a model version back to everything it came from, as recorded in MLflow."""

from __future__ import annotations

from typing import Any

from driftloop import tracking
from driftloop.storage import open_store
from tasks import registry
from tasks.datasets import DatasetStore


def trace(lake: str, use_case: str, ref: str) -> dict[str, Any]:
    """The chain: model version, training run, base, dataset, monitor run, logs."""
    client = tracking.client()
    version = registry.get(use_case, ref)
    chain: list[dict[str, Any]] = [
        {
            "what": "model version",
            "id": f"{version.name}/{version.version}",
            "facts": {
                "kind": version.kind,
                "aliases": ", ".join(version.aliases) or "none",
                "source": version.source,
            },
        }
    ]
    if version.run_id:
        run = client.get_run(version.run_id)
        chain.append(
            {
                "what": "training run",
                "id": version.run_id,
                "facts": {
                    "experiment": run.info.experiment_id,
                    "status": run.info.status,
                    "prefect flow run": run.data.tags.get("prefect.flow_run_id", "-"),
                    **{
                        k: v
                        for k, v in run.data.params.items()
                        if k in ("base_model", "base_revision", "dataset_version")
                    },
                },
            }
        )
    if version.kind == "adapter":
        base = registry.get(use_case, version.tags["base_version"])
        chain.append(
            {
                "what": "base model",
                "id": f"{base.name}/{base.version}",
                "facts": {
                    "base_model": base.tags.get("base_model", ""),
                    "revision": base.tags.get("base_revision", ""),
                    "pre-trained on": base.tags.get("window", "-"),
                },
            }
        )
    dataset = version.tags.get("dataset_version")
    if dataset:
        chain += _dataset(lake, dataset, client)
    return {
        "model": version.name,
        "version": version.version,
        "chain": chain,
    }


def _dataset(lake: str, dataset: str, client) -> list[dict[str, Any]]:
    store = DatasetStore(open_store(lake))
    ref = store.find(dataset)
    card = ref.card
    steps = [
        {
            "what": "dataset version",
            "id": f"{ref.name}/{ref.version}",
            "facts": {
                "path": store.uri(ref.name, ref.version),
                "examples": card["examples"],
                "splits": card["splits"],
                "parent": card.get("parent") or "none",
                "curate run": card.get("mlflow_run_id", "-"),
                "sources": card["sources"],
            },
        }
    ]
    monitor = card.get("monitor_run")
    if monitor:
        tags = client.get_run(monitor).data.tags
        steps.append(
            {
                "what": "monitor run",
                "id": monitor,
                "facts": {
                    "window": tags.get("window", "-"),
                    "reference": tags.get("reference", "-"),
                    "verdict": f"{tags.get('status', '-')} ({tags.get('severity')})",
                },
            }
        )
    origins = store.examples(ref)["origin"]
    objects = sorted(origins.unique().tolist())
    steps.append(
        {
            "what": "log window",
            "id": f"{card['window']['start']} to {card['window']['end']}",
            "facts": {
                "interactions in window": card.get("interactions", "-"),
                "log objects": len(objects),
                "first objects": ", ".join(objects[:3]),
                "lake": card["lake"],
            },
        }
    )
    return steps
