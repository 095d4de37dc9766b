"""Commands about models: `finetune`, `evaluate`, `promote`, `rollback`, `lineage`."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from driftloop.cli import JsonOption, LakeOption, _fail, _lake, _print, app
from driftloop.errors import DriftloopError

UseCaseOption = Annotated[
    str,
    typer.Option("--model", help="Use case (the logs' model field)."),
]


@app.command()
def finetune(
    dataset: Annotated[str, typer.Option(help="Dataset version (or unique prefix).")],
    base: Annotated[
        str | None,
        typer.Option(
            help="Base model: Hugging Face id or local folder; default: the "
            "champion's base, or a small model pre-trained here."
        ),
    ] = None,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train a LoRA adapter on a dataset version; register it as challenger."""
    from flows.finetune import FinetuneParams
    from flows.finetune import finetune as finetune_flow

    try:
        result = finetune_flow(
            FinetuneParams(lake=_lake(lake), dataset=dataset, base=base)
        )
    except DriftloopError as exc:
        _fail(exc)
    _print(result, as_json, "finetune")


@app.command()
def evaluate(
    model: UseCaseOption,
    challenger: Annotated[
        str, typer.Option(help="Challenger version or alias.")
    ] = "challenger",
    champion: Annotated[str, typer.Option(help="Champion version or alias.")] = (
        "champion"
    ),
    dataset: Annotated[
        str | None,
        typer.Option(help="Dataset for the slices; default the challenger's."),
    ] = None,
    promote: Annotated[
        bool, typer.Option(help="Move alias champion when the gate passes.")
    ] = True,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare challenger with champion slice by slice; promote through the gate."""
    from flows.evaluate import EvaluateParams
    from flows.evaluate import evaluate as evaluate_flow

    try:
        result = evaluate_flow(
            EvaluateParams(
                lake=_lake(lake),
                use_case=model,
                challenger=challenger,
                champion=champion,
                dataset=dataset,
                promote=promote,
            )
        )
    except DriftloopError as exc:
        _fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    _print_gate(result)


def _print_gate(result: dict[str, Any]) -> None:
    console = Console()
    table = Table(
        title=f"challenger v{result['challenger_version']} vs champion "
        f"v{result['champion_version']} (answer NLL, nats/token)"
    )
    for column in (
        "slice",
        "role",
        "n",
        "champion",
        "challenger",
        "improvement",
        "95% interval",
        "verdict",
    ):
        table.add_column(column)
    for row in result["slices"]:
        table.add_row(
            row["slice"],
            row["kind"],
            str(row["n"]),
            f"{row['champion']:.3f}",
            f"{row['challenger']:.3f}",
            f"{row['improvement']:+.3f}",
            f"[{row['low']:+.3f}, {row['high']:+.3f}]",
            row.get("verdict", ""),
        )
    console.print(table)
    verdict = (
        "PROMOTED"
        if result["promoted"]
        else (
            "passes the gate (not promoted: --no-promote)"
            if result["promote"]
            else "REJECTED"
        )
    )
    console.print(f"[bold]{verdict}[/]")
    for reason in result["reasons"]:
        console.print(f"- {reason}")


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Version number to promote.")],
    model: UseCaseOption,
    canary: Annotated[
        float | None,
        typer.Option(help="Serve this share (%) of traffic as canary instead."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a version champion by hand, or start it as a canary with a traffic share."""
    from tasks import registry

    try:
        if canary is not None:
            result = registry.canary(model, version, canary)
        else:
            registry.get(model, version)
            result = registry.promote(model, version)
    except DriftloopError as exc:
        _fail(exc)
    _print(result, as_json, f"{registry.model_name(model)} aliases")


@app.command()
def rollback(model: UseCaseOption, as_json: JsonOption = False) -> None:
    """Give alias champion back to the previous champion."""
    from tasks import registry

    try:
        result = registry.rollback(model)
    except DriftloopError as exc:
        _fail(exc)
    _print(result, as_json, f"{registry.model_name(model)} aliases")


@app.command()
def lineage(
    version: Annotated[str, typer.Argument(help="Model version number or alias.")],
    model: UseCaseOption,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Trace a model version to its training run, dataset, monitor run and logs."""
    from tasks.lineage import trace

    try:
        result = trace(_lake(lake), model, version)
    except DriftloopError as exc:
        _fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    console = Console()
    for step in result["chain"]:
        console.print(f"[bold]{step['what']}[/] {step['id']}")
        for key, value in step.get("facts", {}).items():
            console.print(f"    {key}: {value}")


@app.command()
def canary(
    model: UseCaseOption,
    window: Annotated[
        str, typer.Option(help="Window of traffic judged: 24h, 7d, 90m.")
    ] = "24h",
    end: Annotated[
        str | None,
        typer.Option(help="End of the window (ISO, UTC); default now."),
    ] = None,
    act: Annotated[
        bool,
        typer.Option(
            help="Promote the canary or withdraw it when the verdict is clear."
        ),
    ] = True,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare the canary's production outcomes with the champion's; act when clear."""
    from flows.canary import CanaryParams
    from flows.canary import canary as canary_flow

    try:
        result = canary_flow(
            CanaryParams(
                lake=_lake(lake), use_case=model, window=window, end=end, act=act
            )
        )
    except DriftloopError as exc:
        _fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    _print_canary(result)


def _print_canary(result: dict[str, Any]) -> None:
    console = Console()
    if result["decision"] == "no canary":
        console.print(result["reasons"][0])
        return
    table = Table(
        title=f"canary v{result['canary_version']} ({result['canary_label']}) vs "
        f"champion v{result['champion_version']} ({result['champion_label']}), "
        f"{result['window']}; differences in points, latency in %"
    )
    for column in ("metric", "n", "canary", "champion", "difference [95%]"):
        table.add_column(column)
    table.add_column("tolerance")
    table.add_column("status")
    for row in result["metrics"]:
        table.add_row(row["metric"], *_canary_cells(row))
    if result["metrics"]:
        console.print(table)
    actions = {"promote": "PROMOTED", "rollback": "ROLLED BACK"}
    decision = result["decision"]
    if result["acted"]:
        console.print(f"[bold]{actions[decision]}[/] aliases: {result['aliases']}")
    elif decision in actions:
        console.print(f"[bold]{decision}[/] (not acted on: --no-act)")
    else:
        console.print("[bold]wait[/]: the evidence is not clear yet")
    for reason in result["reasons"]:
        console.print(f"- {reason}")


def _canary_cells(row: dict[str, Any]) -> list[str]:
    """A metric's row as text: shares in %, latency in ms, changes in points or %."""
    value = "{:.0f} ms" if row["metric"] == "latency_p50" else "{:.1%}"

    def shown(number: float | None) -> str:
        return "-" if number is None else value.format(number)

    difference = "-"
    if row["difference"] is not None:
        difference = (
            f"{100 * row['difference']:+.1f} "
            f"[{100 * row['low']:+.1f}, {100 * row['high']:+.1f}]"
        )
    limit = row["tolerance"] if row["harmful"] == "higher" else -row["tolerance"]
    return [
        f"{row['n_canary']}/{row['n_champion']}",
        shown(row["canary"]),
        shown(row["champion"]),
        difference,
        f"{100 * limit:+.1f}",
        row["status"],
    ]
