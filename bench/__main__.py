"""Run every benchmark in bench/ and print one table; results also go to bench/results/."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import ingest

BENCHMARKS = {"ingest": ingest.run}
RESULTS = Path(__file__).parent / "results"


def main(names: list[str]) -> None:
    RESULTS.mkdir(exist_ok=True)
    table = Table(title=f"driftloop benchmarks on {platform.machine()}, {_cores()} cores")
    columns = ("benchmark", "case", "method", "records", "s", "records/s", "peak RSS MB", "note")
    for column in columns:
        table.add_column(column)
    for name, run in BENCHMARKS.items():
        if names and name not in names:
            continue
        rows = run()
        (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2))
        for row in rows:
            table.add_row(
                name,
                row["case"],
                row["method"],
                f"{row['records']:,}",
                f"{row['seconds']:.2f}",
                f"{row['records_per_s']:,.0f}",
                f"{row['peak_rss_mb']:,.0f}",
                row.get("note", ""),
            )
    Console().print(table)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main(sys.argv[1:])
