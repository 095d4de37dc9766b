"""Flow `evaluate`: challenger against champion, slice by slice, then the gate."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from driftloop import tracking
from driftloop.settings import HomeSettings
from driftloop.storage import open_store
from tasks import registry
from tasks.datasets import DatasetStore

EXPERIMENT = "driftloop-evaluate"


class EvaluateParams(BaseModel):
    """Which challenger to judge, against which champion, and whether to act."""

    lake: str = Field(
        default_factory=lambda: HomeSettings().lake_uri(), description="Lake URI."
    )
    use_case: str = Field(description="Use case (the logs' model field).")
    challenger: str = Field(
        "challenger", description="Challenger: a version number or an alias."
    )
    champion: str = Field("champion", description="Champion: version or alias.")
    dataset: str | None = Field(
        None, description="Dataset version for the slices; empty: the challenger's."
    )
    promote: bool = Field(True, description="Move alias champion when the gate passes.")
    generate: int = Field(
        16,
        ge=0,
        le=1000,
        description=(
            "Examples of the target and golden slices answered by generation "
            "(similarity, refusals, length, exact match); 0 skips generation."
        ),
    )


@flow(name="evaluate")
def evaluate(params: EvaluateParams) -> dict[str, Any]:
    """Score both versions on every slice, decide through the gate, log the evidence."""
    import mlflow

    from evals.gate import GateSettings, compare_slice, decide
    from evals.slices import build

    logger = get_run_logger()
    settings = GateSettings()
    challenger = registry.get(params.use_case, params.challenger)
    champion = registry.get(params.use_case, params.champion)
    if challenger.version == champion.version:
        from driftloop.errors import ConfigError

        raise ConfigError(
            f"challenger and champion are both version {champion.version}; train a "
            "challenger first (driftloop finetune)"
        )
    datasets = DatasetStore(open_store(params.lake))
    ref = datasets.find(params.dataset or challenger.tags["dataset_version"])
    examples = datasets.examples(ref)
    slices = build(
        ref.name, examples[examples["split"] == "validation"], settings.min_examples
    )
    scores = {
        "champion": _score(params.use_case, champion, slices, params.generate),
        "challenger": _score(params.use_case, challenger, slices, params.generate),
    }
    results = [
        compare_slice(
            s.name,
            s.kind,
            scores["champion"][s.name]["nll"],
            scores["challenger"][s.name]["nll"],
            settings,
            extra=_extra(scores, s.name),
        )
        for s in slices
    ]
    decision = decide(results, settings)
    tags = {
        "use_case": params.use_case,
        "challenger_version": challenger.version,
        "champion_version": champion.version,
        "dataset_version": ref.version,
        "decision": "promote" if decision.promote else "reject",
    }
    name = f"{params.use_case} v{challenger.version} vs v{champion.version}"
    with tracking.run(EXPERIMENT, run_name=name, tags=tags) as run:
        mlflow.log_params({**tags, **settings.model_dump(), **_judge_params()})
        mlflow.log_metrics(_metrics(decision))
        mlflow.log_table(data=_columns(decision.table()), artifact_file="gate.json")
        mlflow.log_dict(
            {"reasons": decision.reasons, "table": decision.table()}, "decision.json"
        )
        moved = None
        if decision.promote and params.promote:
            moved = registry.promote(params.use_case, challenger.version)
        run_id = run.info.run_id
    _publish(decision, tags, tracking.run_url(run))
    logger.info(
        "use_case=%s challenger=%s champion=%s decision=%s moved=%s",
        params.use_case,
        challenger.version,
        champion.version,
        tags["decision"],
        moved,
    )
    return json.loads(
        json.dumps(
            {
                **tags,
                "promote": decision.promote,
                "promoted": moved is not None,
                "aliases": moved,
                "reasons": decision.reasons,
                "slices": decision.table(),
                "mlflow_run_id": run_id,
            },
            default=float,
        )
    )


def _score(use_case, version, slices, generate: int) -> dict[str, dict]:
    """Answer NLL on every example of every slice; generated answers on a few."""
    from evals.judge import Judge, JudgeSettings, summarise
    from evals.metrics import answer_nll, generate_answers, generation_metrics
    from tasks.embeddings import Embedder

    model, tokenizer = registry.load(use_case, version)
    embedder = Embedder() if generate else None
    # Off by default; when DRIFTLOOP_JUDGE_URL is set it grades the generated answers.
    judge = Judge() if generate and JudgeSettings().enabled else None
    out = {}
    for s in slices:
        row: dict[str, Any] = {"nll": answer_nll(model, tokenizer, s.chats)}
        # Generation costs a forward pass per token: spend it where decisions are.
        if generate and (s.kind == "target" or s.name == "golden"):
            sample = s.chats[:generate]
            answers = generate_answers(model, tokenizer, sample)
            references = [c[-1]["content"] for c in sample]
            row["generation"] = {
                k: float(np.mean(v))
                for k, v in generation_metrics(answers, references, embedder).items()
            }
            if judge is not None:
                questions = [c[-2]["content"] for c in sample]
                verdicts = judge.score_many(
                    list(zip(questions, references, answers, strict=True))
                )
                row["generation"].update(summarise(verdicts))
        out[s.name] = row
    return out


def _extra(scores: dict, name: str) -> dict[str, float]:
    from evals.metrics import perplexity

    extra = {}
    for who in ("champion", "challenger"):
        extra[f"{who}.perplexity"] = perplexity(scores[who][name]["nll"])
        for key, value in scores[who][name].get("generation", {}).items():
            extra[f"{who}.{key}"] = value
    return extra


def _judge_params() -> dict[str, str]:
    from evals.judge import JudgeSettings, load_prompt

    judge = JudgeSettings()
    if not judge.enabled:
        return {"judge": "off"}
    prompt = load_prompt()
    return {
        "judge": "on",
        "judge.model": judge.model,
        "judge.prompt_version": prompt.version,
        "judge.prompt_sha256": prompt.sha256,
    }


def _metrics(decision) -> dict[str, float]:
    out = {"promote": float(decision.promote)}
    for s in decision.slices:
        key = s.name.replace(":", ".").replace(" ", "_")
        for field in ("champion", "challenger", "improvement", "low", "high", "n"):
            out[f"{key}.{field}"] = float(getattr(s, field))
    return {k: v for k, v in out.items() if np.isfinite(v)}


def _columns(rows: list[dict]) -> dict[str, list]:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: [row.get(k) for row in rows] for k in keys}


def _publish(decision, tags: dict, url: str | None) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_table_artifact(
        key=tracking.artifact_key("gate", tags["use_case"]),
        table=decision.table(),
        description=(
            f"{tags['decision']}: challenger v{tags['challenger_version']} vs champion "
            f"v{tags['champion_version']}" + (f" ({url})" if url else "")
        ),
    )
    create_markdown_artifact(
        key=tracking.artifact_key("gate-reasons", tags["use_case"]),
        markdown="\n".join(f"- {r}" for r in decision.reasons)
        + (f"\n\n[MLflow run]({url})" if url else ""),
    )
