"""Commands about retraining data: `curate`, `datasets list|diff` and `forget`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from driftloop.cli import JsonOption, LakeOption, _fail, _lake, app
from driftloop.errors import DriftloopError

datasets_app = typer.Typer(
    help="List and compare dataset versions.", no_args_is_help=True
)
app.add_typer(datasets_app, name="datasets")


@app.command()
def curate(
    lake: LakeOption = None,
    model: Annotated[
        str | None,
        typer.Option(help="Use case (the logs' model field); default: each."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="Window start (ISO, UTC); default: where the last version ended."
        ),
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Window end, exclusive (ISO, UTC); default now.")
    ] = None,
    monitor_run: Annotated[
        str | None,
        typer.Option(help="Monitor run id, or 'latest' drifted run, to focus on."),
    ] = None,
    reviewed: Annotated[
        Path | None,
        typer.Option(help="A labelled review queue file (.csv or .parquet) to add."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Turn production traffic into a scrubbed, deduplicated, versioned dataset."""
    from flows.curate import CurateParams
    from flows.curate import curate as curate_flow

    try:
        params = CurateParams(
            lake=_lake(lake),
            model=model,
            start=start,
            end=end,
            monitor_run=monitor_run,
            reviewed=str(reviewed) if reviewed else None,
        )
        results = curate_flow(params)
    except DriftloopError as exc:
        _fail(exc)
    if as_json:
        payload: Any = results[0] if len(results) == 1 else {"datasets": results}
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
        return
    console = Console()
    for r in results:
        state = "new version" if r["created"] else "unchanged (same content)"
        console.print(
            f"[bold]{r['name']}[/] {r['version']}: {r['examples']} examples, {state}, "
            f"parent {r['parent'] or 'none'}\n  {r['path']}"
        )
        table = Table(show_header=True)
        table.add_column("stage")
        table.add_column("examples after", justify="right")
        for stage, count in r["stages"].items():
            table.add_row(stage, str(count))
        console.print(table)
        queue = r["review_queue"]
        if queue["rows"]:
            console.print(
                f"  review queue: {queue['rows']} rows to label in {queue['path']}"
                + (f" ({queue['overflow']} more wait)" if queue["overflow"] else "")
                + "; add them back with `driftloop curate --reviewed FILE`"
            )


@datasets_app.command("list")
def list_versions(
    lake: LakeOption = None,
    name: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List dataset versions, oldest first."""
    from driftloop.storage import open_store
    from tasks.datasets import DatasetStore

    try:
        refs = DatasetStore(open_store(_lake(lake))).versions(name)
    except DriftloopError as exc:
        _fail(exc)
    rows = [
        {
            "name": r.name,
            "version": r.version,
            "created_at": r.card["created_at"],
            "examples": r.card["examples"],
            "train": r.card["splits"]["train"],
            "validation": r.card["splits"]["validation"],
            "parent": r.card.get("parent"),
            "window": f"{r.card['window']['start']}/{r.card['window']['end']}",
        }
        for r in refs
    ]
    if as_json:
        sys.stdout.write(json.dumps({"versions": rows}) + "\n")
        return
    table = Table(title="dataset versions")
    for column in (
        "name",
        "version",
        "created_at",
        "examples",
        "train",
        "validation",
        "parent",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(
                str(row[c])
                for c in (
                    "name",
                    "version",
                    "created_at",
                    "examples",
                    "train",
                    "validation",
                    "parent",
                )
            )
        )
    Console().print(table)


@datasets_app.command("diff")
def diff_versions(
    old: Annotated[
        str | None, typer.Argument(help="Older version (or prefix).")
    ] = None,
    new: Annotated[
        str | None, typer.Argument(help="Newer version (or prefix).")
    ] = None,
    lake: LakeOption = None,
    name: Annotated[
        str | None,
        typer.Option(help="Without versions: compare this dataset's last two."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Say which examples a version added and removed, per topic and per source."""
    from driftloop.errors import ConfigError
    from driftloop.storage import open_store
    from tasks.datasets import DatasetStore, diff

    try:
        store = DatasetStore(open_store(_lake(lake)))
        if old and new:
            before, after = store.find(old), store.find(new)
        elif old or new:
            raise ConfigError("give two versions, or none with --name")
        else:
            refs = store.versions(name)
            if len(refs) < 2:
                raise ConfigError(
                    f"dataset {name or '(any)'} has {len(refs)} version(s); a diff "
                    "needs two. Run `driftloop datasets list`"
                )
            before, after = refs[-2], refs[-1]
        result = {"old": before.version, "new": after.version}
        result |= diff(store.examples(before), store.examples(after))
    except DriftloopError as exc:
        _fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    console = Console()
    console.print(
        f"[bold]{before.name} {before.version} -> {after.name} {after.version}[/]: "
        f"{result['added']} added, {result['removed']} removed, {result['changed']} "
        f"changed, {result['unchanged']} unchanged"
    )
    for key in ("by_topic", "by_source"):
        table = Table(title=key.replace("_", " "))
        for column in (key.split("_")[1], "added", "removed"):
            table.add_column(column)
        for label, counts in result[key].items():
            table.add_row(label, f"+{counts['added']}", f"-{counts['removed']}")
        console.print(table)


@app.command()
def forget(
    user_id: Annotated[str, typer.Option("--user-id", help="The user to forget.")],
    lake: LakeOption = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Exclude a user from every later dataset; list what already holds their data."""
    from driftloop.storage import open_store
    from tasks.datasets import DatasetStore

    try:
        store = DatasetStore(open_store(_lake(lake)))
        record = store.forget(user_id, reason)
        holding = store.versions_with_user(user_id)
        models = _model_versions({r.version for r in holding})
    except DriftloopError as exc:
        _fail(exc)
    result = {
        "user_hash": record["user_hash"],
        "tombstone_at": record["requested_at"],
        "dataset_versions": [f"{r.name}/{r.version}" for r in holding],
        "model_versions": models,
    }
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    console = Console()
    console.print(
        f"Tombstone recorded ({record['user_hash']}): every dataset version curated "
        "from now on leaves this user out."
    )
    console.print(
        "Dataset versions holding their data: "
        + (", ".join(result["dataset_versions"]) or "none")
    )
    console.print(
        "Registered model versions trained on them: "
        + (", ".join(result["model_versions"]) or "none")
    )
    if holding:
        console.print(
            "Those versions are not rewritten: curate a new version and retrain, "
            "then delete the old ones where your policy requires it."
        )


def _model_versions(dataset_versions: set[str]) -> list[str]:
    """Registered model versions whose training data is one of these versions."""
    if not dataset_versions:
        return []
    from tasks import registry

    return sorted(
        f"{v.name}/{v.version}"
        for v in registry.versions()
        if v.tags.get("dataset_version") in dataset_versions
    )
