"""The `driftloop` command: one subcommand per flow."""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from driftloop.errors import DriftloopError

app = typer.Typer(
    help="Keep a production language model healthy: ingest, monitor, curate, improve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)  # messages stay whole for grep and logs

LakeOption = Annotated[
    str | None,
    typer.Option(
        "--lake",
        help="Lake folder or s3://bucket/prefix [env DRIFTLOOP_LAKE].",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object on stdout instead of a table."),
]


def _embedded_defaults() -> None:
    """Keep laptop mode offline and self-contained unless the user chose otherwise."""
    from driftloop.settings import HomeSettings

    home = HomeSettings().home.expanduser().absolute()
    if "PREFECT_HOME" not in os.environ:
        (home / "prefect").mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # With an MLflow server, every ended run prints its link on stdout, where --json
    # promises one JSON object; the links are in the runs' Prefect artifacts instead.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # With `driftloop up` running, every command reports to its servers.
    from driftloop import stack

    stack.connect_env()


@app.callback()
def main() -> None:
    _embedded_defaults()
    # SIGTERM (a stop from a scheduler, `kill`) unwinds like Ctrl-C, so runs end
    # KILLED and temporary files go; inside a flow Prefect's own handler takes over.
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _lake(lake: str | None) -> str:
    from driftloop.settings import HomeSettings
    from driftloop.storage import refuse_credentials

    # Refused here, before a flow run records the URI among its parameters.
    return refuse_credentials(lake or HomeSettings().lake_uri())


def _print(result: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    table = Table(title=title, show_header=False)
    for key, value in result.items():
        table.add_row(
            key, ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        )
    Console().print(table)


def _fail(exc: DriftloopError) -> None:
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


@app.command()
def ingest(
    source: Annotated[
        str,
        typer.Option(
            help="Folder or s3://bucket/prefix of .jsonl, .jsonl.gz, .parquet logs."
        ),
    ],
    lake: LakeOption = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            help="JSON file mapping schema fields to your field names (dotted paths)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Land new log objects in the lake, each record exactly once."""
    from flows.ingest import IngestParams
    from flows.ingest import ingest as ingest_flow

    try:
        from driftloop.storage import refuse_credentials

        params = IngestParams(
            source=refuse_credentials(source),
            lake=_lake(lake),
            mapping=str(mapping) if mapping else None,
        )
        result = ingest_flow(params)
    except DriftloopError as exc:
        _fail(exc)
    _print(result, as_json, "ingest")
    if result["failed_objects"]:
        err.print(
            f"[yellow]{len(result['failed_objects'])} object(s) could not be read; "
            "they stay pending and the next run retries them.[/]"
        )


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Folder to write hourly log files into.")],
    days: Annotated[int, typer.Option(min=1, max=366, help="Days of traffic.")] = 14,
    per_day: Annotated[
        int, typer.Option(min=1, help="Interactions per day per use case.")
    ] = 1000,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same bytes.")
    ] = 0,
    scenario: Annotated[
        str, typer.Option(help="none, new-topic, quality-drop or language-shift.")
    ] = "new-topic",
    drift_day: Annotated[
        int, typer.Option(min=0, help="Day index (from 0) the scenario starts.")
    ] = 10,
    drift_share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of traffic the new topic takes."),
    ] = 0.15,
    start: Annotated[
        str, typer.Option(help="First day, YYYY-MM-DD (UTC).")
    ] = "2026-11-01",
    model: Annotated[
        list[str] | None,
        typer.Option(help="Use case (repeatable): support-assistant, sales-assistant."),
    ] = None,
    canary_version: Annotated[
        str | None,
        typer.Option(
            help="Serve some support sessions from a canary that logs this "
            "model_version (its serving label, e.g. driftloop-support-assistant/3).",
            show_default=False,
        ),
    ] = None,
    canary_share: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of sessions the canary serves, e.g. 0.1."
        ),
    ] = 0.2,
    canary_day: Annotated[
        int, typer.Option(min=0, help="Day index (from 0) the canary starts serving.")
    ] = 0,
    canary_failure_factor: Annotated[
        float,
        typer.Option(
            help="Multiplies the canary's share of poor answers, and with it "
            "thumbs-down, corrections and failed outcomes: 0.5 better, 3 worse."
        ),
    ] = 1.0,
    canary_latency_factor: Annotated[
        float, typer.Option(help="Multiplies the canary's latency: 1.5 is slower.")
    ] = 1.0,
    as_json: JsonOption = False,
) -> None:
    """Write realistic production traffic, with a chosen drift, as hourly log files."""
    from tasks.simulate import SimulationConfig
    from tasks.simulate import simulate as run_simulation

    try:
        config = SimulationConfig(
            days=days,
            per_day=per_day,
            seed=seed,
            scenario=scenario,
            drift_day=drift_day,
            drift_share=drift_share,
            start=date.fromisoformat(start),
            models=tuple(model or ("support-assistant",)),
            canary_version=canary_version,
            canary_share=canary_share,
            canary_day=canary_day,
            canary_failure_factor=canary_failure_factor,
            canary_latency_factor=canary_latency_factor,
        )
    except ValueError as exc:
        _fail(DriftloopError(str(exc)))
    summary = run_simulation(out, config)
    _print(
        {k: v for k, v in summary.__dict__.items() if not isinstance(v, dict | list)},
        as_json,
        f"simulated traffic in {out}",
    )


@app.command()
def monitor(
    lake: LakeOption = None,
    model: Annotated[
        str | None,
        typer.Option(help="Use case (the logs' model field); default: each."),
    ] = None,
    window: Annotated[
        str, typer.Option(help="Current window length: 24h, 7d, 90m.")
    ] = "24h",
    end: Annotated[
        str | None,
        typer.Option(help="End of the current window (ISO, UTC); default now."),
    ] = None,
    windows: Annotated[
        int, typer.Option(min=1, max=366, help="Consecutive windows ending at --end.")
    ] = 1,
    reference_days: Annotated[
        int,
        typer.Option(min=1, max=365, help="Days before the window used as reference."),
    ] = 7,
    reference_start: Annotated[
        str | None,
        typer.Option(help="Explicit reference start (with --reference-end)."),
    ] = None,
    reference_end: Annotated[
        str | None, typer.Option(help="Explicit reference end.")
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="Ad hoc: log file or folder as the reference.")
    ] = None,
    current: Annotated[
        str | None,
        typer.Option(help="Ad hoc: log file or folder as the current window."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Compare current traffic with a reference: signals, drift, new topics."""
    from flows.monitor import MonitorParams
    from flows.monitor import monitor as monitor_flow

    try:
        params = MonitorParams(
            lake=_lake(lake),
            model=model,
            window=window,
            end=end,
            windows=windows,
            reference_days=reference_days,
            reference_start=reference_start,
            reference_end=reference_end,
            reference_path=reference,
            current_path=current,
        )
        results = monitor_flow(params)
    except DriftloopError as exc:
        _fail(exc)
    if as_json:
        payload = results[0] if len(results) == 1 else results
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
        return
    _print_monitor(results)


def _print_monitor(results: list[dict[str, Any]]) -> None:
    console = Console()
    table = Table(title="monitor")
    for column in ("use case", "window", "verdict", "p-value", "new topics"):
        table.add_column(column)
    for r in results:
        p = r["embedding"]["p_value"]
        topics = "; ".join(" ".join(t["keywords"][:3]) for t in r["new_topics"]) or "-"
        verdict = f"{r['status']} ({r['severity']})" if r["drift"] else r["status"]
        table.add_row(
            str(r["model"]),
            r["window"].replace("T00:00", ""),
            f"[bold red]{verdict}[/]" if r["drift"] else verdict,
            "-" if p is None else f"{p:.4f}",
            topics,
        )
    console.print(table)
    for r in results:
        if r["drift"] or r["status"] == "not enough data":
            console.print(
                f"[bold]{r['model']} {r['window']}[/]: " + "; ".join(r["reasons"])
            )
            for topic in r["new_topics"]:
                console.print(
                    f"  new topic, {topic['share']:.1%} of the window: "
                    f'{", ".join(topic["keywords"])}; e.g. "{topic["examples"][0]}"'
                )


@app.command()
def schema() -> None:
    """Print the canonical interaction schema."""
    from driftloop.schema import FIELDS

    table = Table(title="interaction schema")
    for column in ("field", "type", "required", "meaning"):
        table.add_column(column)
    for name, dtype, nullable, doc in FIELDS:
        table.add_row(name, str(dtype), "" if nullable else "yes", doc)
    Console().print(table)


@app.command()
def status(lake: LakeOption = None, as_json: JsonOption = False) -> None:
    """Say what the lake holds and where to look next."""
    from driftloop import tracking
    from driftloop.storage import open_store
    from tasks.lake import Lake
    from tasks.status import lake_status

    try:
        summary = lake_status(Lake(open_store(_lake(lake))))
    except DriftloopError as exc:
        _fail(exc)
    if as_json:
        _print(summary, True, "")
        return
    console = Console()
    console.print(
        f"[bold]lake[/] {summary['lake']}: {summary['interactions']} interactions from "
        f"{summary['objects']} objects; {summary['quarantined']} lines quarantined, "
        f"{summary['duplicates']} duplicates dropped (read {summary['read']})."
    )
    models = sorted({m for day in summary["per_day"].values() for m in day})
    table = Table(title="interactions per day")
    table.add_column("date")
    for model in models:
        table.add_column(model, justify="right")
    for day, counts in summary["per_day"].items():
        table.add_row(day, *(str(counts.get(m, 0)) for m in models))
    console.print(table)
    if summary["quarantine_reasons"]:
        reasons = Table(title="quarantine reasons")
        reasons.add_column("reason")
        reasons.add_column("lines", justify="right")
        for reason, count in summary["quarantine_reasons"].items():
            reasons.add_row(reason, str(count))
        console.print(reasons)
    from driftloop import stack

    up = stack.running()
    mlflow_at = up.mlflow_url if up else "`driftloop up` (or `make up`), then the URL"
    prefect_at = up.prefect_ui if up else "the Prefect UI `driftloop up` prints"
    console.print(
        "[bold]Where to look[/]\n"
        f"- quarantine: {summary['lake']}/quarantine (Parquet: each refused line, its "
        "source, line number and reason)\n"
        f"- MLflow ({tracking.strip_credentials(tracking.tracking_uri())}): "
        f"{mlflow_at}; experiments driftloop-ingest, -monitor (drift over windows, "
        "Evidently HTML, topics), -curate (datasets as run inputs), -finetune, "
        "-evaluate (gate tables); registered models driftloop-<use case> with "
        "aliases champion and challenger\n"
        f"- Prefect: {prefect_at}; flow runs with their drift-summary, dataset-card "
        "and evaluation artifacts, deployments and schedules"
    )


# Registered last: these modules add their commands to `app` when imported.
from driftloop import cli_datasets, cli_loop, cli_models  # noqa: E402, F401
