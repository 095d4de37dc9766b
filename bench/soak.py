"""Soak: a month of simulated traffic ingested day after day by one long-lived process.

    python -m bench soak                                   # 30 days x 100k a day
    BENCH_SOAK_DAYS=3 BENCH_SOAK_PER_DAY=20000 python -m bench soak

One fresh process plays a worker that is never restarted: each day, 24 hourly objects
arrive in the source (simulated, with malformed and re-sent lines, by a separate
process so that generating them costs the worker nothing), and one ingest run lands
them in a folder lake as a daily batch. Per day it reports that run's peak RSS (the
kernel's high-water mark, reset before each run), the RSS after it, and the running
totals. A leak, or a cost that grows with the lake, shows as a rising line; the dedup
index alone should add 8 bytes per landed record.

At the end every day and the month must satisfy read = landed + quarantined +
duplicates, the manifest must agree with the runs' reports, and the lake must hold
each landed request id exactly once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from bench import run_isolated

DAYS = int(os.environ.get("BENCH_SOAK_DAYS", "30"))
PER_DAY = int(os.environ.get("BENCH_SOAK_PER_DAY", "100000"))
START = date(2026, 11, 1)
COUNTS = ("read", "landed", "quarantined", "duplicates")


def run() -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="driftloop-soak-"))
    try:
        # The process's own high-water mark would include the simulating children.
        result, _ = run_isolated(
            "bench.soak", "worker", str(work), str(DAYS), str(PER_DAY)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    days = result["days"]
    first, last = days[0], days[-1]
    summary = {
        "day": f"all {len(days)}",
        "objects": sum(d["objects"] for d in days),
        **{name: result["totals"][name] for name in COUNTS},
        "seconds": round(sum(d["seconds"] for d in days), 1),
        "peak_rss_mb": max(d["peak_rss_mb"] for d in days),
        "rss_after_mb": last["rss_after_mb"],
        "note": (
            f"peak RSS first/last day {first['peak_rss_mb']:.0f}/"
            f"{last['peak_rss_mb']:.0f} MB; index {result['index_mb']:.0f} MB"
        ),
    }
    return [*days, summary]


def _worker(work: Path, days: int, per_day: int) -> dict:
    from driftloop.storage import LocalStore
    from tasks.ingest import ingest_objects, pending_objects
    from tasks.lake import Lake

    source_root, lake_root = work / "logs", work / "lake"
    totals = dict.fromkeys(COUNTS, 0)
    rows = []
    for index in range(days):
        day = START + timedelta(days=index)
        _simulate(source_root, day, per_day, seed=index + 1)
        _reset_peak_rss()
        started = time.perf_counter()
        source, lake = LocalStore(source_root), Lake(LocalStore(lake_root))
        report = ingest_objects(source, lake, pending_objects(source, lake))
        seconds = time.perf_counter() - started
        assert report.failed_objects == [], report.errors
        assert report.read == report.landed + report.quarantined + report.duplicates
        for name in COUNTS:
            totals[name] += getattr(report, name)
        rows.append(
            {
                "day": day.isoformat(),
                "objects": report.objects,
                **{name: getattr(report, name) for name in COUNTS},
                "total_read": totals["read"],
                "total_landed": totals["landed"],
                "seconds": round(seconds, 2),
                "peak_rss_mb": _rss_mb("VmHWM"),
                "rss_after_mb": _rss_mb("VmRSS"),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    _check_lake(Lake(LocalStore(lake_root)), totals)
    index_mb = totals["landed"] * 8 / 2**20
    return {"days": rows, "totals": totals, "index_mb": index_mb}


def _check_lake(lake, totals: dict[str, int]) -> None:
    """The month's figures add up, and the lake agrees with the runs' reports."""
    import pyarrow.compute as pc

    assert totals["read"] == sum(totals[n] for n in COUNTS[1:]), totals
    manifest = lake.manifest()
    for name in COUNTS:
        assert pc.sum(manifest[name]).as_py() == totals[name], name
    ids = lake.read_interactions(columns=["request_id"])["request_id"]
    assert len(ids) == totals["landed"], (len(ids), totals["landed"])
    assert pc.count_distinct(ids).as_py() == len(ids), "a request id landed twice"


def _simulate(out: Path, day: date, per_day: int, seed: int) -> None:
    """Write one day's hourly objects from a separate process."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.soak",
            "simulate",
            str(out),
            day.isoformat(),
            str(per_day),
            str(seed),
        ],
        check=True,
    )


def _simulate_day(out: Path, day: date, per_day: int, seed: int) -> None:
    from tasks.simulate import SimulationConfig, simulate

    # A seed per day: each day's request ids are new, as production's are.
    simulate(out, SimulationConfig(days=1, per_day=per_day, seed=seed, start=day))


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets this process's VmHWM (peak RSS).
    Path("/proc/self/clear_refs").write_text("5")


def _rss_mb(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


if __name__ == "__main__":
    if sys.argv[1] == "simulate":
        out, day, per_day, seed = sys.argv[2:6]
        _simulate_day(Path(out), date.fromisoformat(day), int(per_day), int(seed))
    else:
        work, days, per_day = sys.argv[2:5]
        print(json.dumps(_worker(Path(work), int(days), int(per_day))))
