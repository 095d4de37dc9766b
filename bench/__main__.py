"""Run every benchmark in bench/ and print a table each; results go to bench/results/.

python -m bench              # all of them (make bench)
python -m bench ingest       # one of them
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import curate, embedding, finetune, ingest, monitor, soak

BENCHMARKS = {
    "ingest": ingest.run,
    "embedding": embedding.run,
    "monitor": monitor.run,
    "curate": curate.run,
    "finetune": finetune.run,
    "soak": soak.run,
}
RESULTS = Path(__file__).parent / "results"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def main(names: list[str]) -> None:
    RESULTS.mkdir(exist_ok=True)
    console = Console()
    machine = f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores"
    for name, run in BENCHMARKS.items():
        if names and name not in names:
            continue
        rows = run()
        (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2))
        columns = list(dict.fromkeys(key for row in rows for key in row))
        table = Table(title=f"{name} ({machine})")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(_cell(row.get(column, "")) for column in columns))
        console.print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
