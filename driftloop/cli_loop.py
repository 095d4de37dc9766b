"""Commands about the closed loop: `improve`, and the local stack's `up` and `down`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from driftloop.cli import JsonOption, LakeOption, _fail, _lake, _print, app, err
from driftloop.errors import DriftloopError

CHECKOUT = Path(__file__).resolve().parent.parent


@app.command()
def improve(
    model: Annotated[str, typer.Option("--model", help="Use case to improve.")],
    monitor_run: Annotated[
        str | None,
        typer.Option(help="Monitor run id (or 'latest') to focus the dataset on."),
    ] = None,
    start: Annotated[str | None, typer.Option(help="Curation window start.")] = None,
    end: Annotated[str | None, typer.Option(help="Curation window end.")] = None,
    promote: Annotated[
        bool, typer.Option(help="Move alias champion when the gate passes.")
    ] = True,
    deployment: Annotated[
        bool,
        typer.Option(
            "--deployment",
            help="Start the `improve` deployment on the Prefect server (its worker "
            "runs it) instead of running here.",
        ),
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="With --deployment: a repeated trigger with the same key starts "
            "nothing new."
        ),
    ] = None,
    lake: LakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Curate, fine-tune, evaluate and (through the gate) promote one use case."""
    from flows.improve import ImproveParams

    try:
        params = ImproveParams(
            lake=_lake(lake),
            use_case=model,
            monitor_run=monitor_run,
            start=start,
            end=end,
            promote=promote,
        )
        if deployment:
            from tasks.improve import trigger

            result = trigger(params, idempotency_key)
        else:
            from flows.improve import improve as improve_flow

            if idempotency_key:
                err.print("[yellow]--idempotency-key applies with --deployment only[/]")
            result = improve_flow(params)
    except DriftloopError as exc:
        _fail(exc)
    _print(result, as_json, f"improve {model}")


@app.command()
def up(
    checkout: Annotated[
        Path, typer.Option(help="Folder holding prefect.yaml and the flows.")
    ] = CHECKOUT,
) -> None:
    """Start Prefect and MLflow servers with their UIs and a worker; deploy flows."""
    from driftloop import stack

    console = Console()
    try:
        running = stack.up(checkout.resolve(), say=lambda m: console.print(f"- {m}"))
    except DriftloopError as exc:
        _fail(exc)
    console.print(
        "[bold]driftloop is up[/]\n"
        f"- Prefect UI: {running.prefect_ui}  (deployments, runs, manual triggers)\n"
        f"- MLflow UI:  {running.mlflow_url}  (experiments, models, aliases)\n"
        f"- logs: {stack.folder()}\n"
        "Every driftloop command in this folder now uses these servers; "
        "`driftloop down` stops them."
    )


@app.command()
def down() -> None:
    """Stop the servers and the worker that `driftloop up` started."""
    from driftloop import stack

    stopped = stack.down(say=lambda m: Console().print(m))
    if stopped:
        Console().print(f"stopped: {', '.join(stopped)}")
    sys.stdout.flush()
