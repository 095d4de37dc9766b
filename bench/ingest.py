"""Ingest throughput and peak memory against the naive pandas baseline.

    python -m bench ingest            # 100k and 1M simulated records
    BENCH_INGEST_SIZES=20000 python -m bench ingest

Each method runs in a fresh process over the same simulated JSONL files (clean, since
pandas cannot read a malformed line); peak RSS is that process's own high-water mark.
The baseline is `pandas.read_json(lines=True)` on each file, concatenated, then one
`to_parquet`: what a script written in an afternoon does.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from bench import run_isolated

SIZES = [
    int(s) for s in os.environ.get("BENCH_INGEST_SIZES", "100000,1000000").split(",")
]
# Hourly files of the same size at every scale (100k records a day), so that a change
# in peak memory can only come from the number of records, not from bigger objects.
PER_DAY = 100_000


def run() -> list[dict]:
    rows = []
    work = Path(tempfile.mkdtemp(prefix="driftloop-bench-"))
    try:
        for size in SIZES:
            source = work / f"logs-{size}"
            _simulate(source, size)
            for method in ("baseline", "driftloop"):
                rows.append(
                    _measure(method, source, work / f"out-{method}-{size}", size)
                )
            rows.append(
                _measure(
                    "driftloop-rerun", source, work / f"out-driftloop-{size}", size
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _simulate(out: Path, size: int) -> None:
    from tasks.simulate import SimulationConfig, simulate

    days = max(1, size // PER_DAY)
    config = SimulationConfig(
        days=days,
        per_day=size // days,
        seed=1,
        scenario="none",
        start=date(2026, 11, 1),
        malformed=False,
    )
    simulate(out, config)


def _measure(method: str, source: Path, out: Path, size: int) -> dict:
    result, peak_rss_mb = run_isolated("bench.ingest", method, str(source), str(out))
    return {
        "case": f"{size:,} records",
        "method": method,
        "records": result["records"],
        "seconds": round(result["seconds"], 2),
        "records_per_s": result["records"] / result["seconds"]
        if result["records"]
        else 0,
        "peak_rss_mb": peak_rss_mb,
        "note": result.get("note", ""),
    }


def _baseline(source: Path, out: Path) -> dict:
    import pandas as pd

    start = time.perf_counter()
    # pandas' defaults, as the naive script has them. At a few thousand records its
    # date inference can fail on mixed UTC offsets; at 100k and above it succeeds.
    files = sorted(source.rglob("*.jsonl"))
    frames = [pd.read_json(path, lines=True) for path in files]
    frame = pd.concat(frames, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out / "all.parquet")
    return {"records": len(frame), "seconds": time.perf_counter() - start}


def _driftloop(source: Path, out: Path) -> dict:
    from driftloop.storage import LocalStore
    from tasks.ingest import ingest_objects, pending_objects
    from tasks.lake import Lake

    start = time.perf_counter()
    store, lake = LocalStore(source), Lake(LocalStore(out))
    report = ingest_objects(store, lake, pending_objects(store, lake))
    seconds = time.perf_counter() - start
    assert report.read == report.landed + report.quarantined + report.duplicates
    note = f"landed {report.landed:,}" if report.read else "rerun: nothing to land"
    return {"records": report.read, "seconds": seconds, "note": note}


if __name__ == "__main__":
    method, source, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    result = _baseline(source, out) if method == "baseline" else _driftloop(source, out)
    print(json.dumps(result))
