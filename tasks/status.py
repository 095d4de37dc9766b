"""What the lake holds: volumes per day and use case, and why lines were quarantined."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks.lake import Lake


def lake_status(lake: Lake) -> dict[str, Any]:
    """Summarise the committed content of a lake."""
    manifest = lake.manifest()
    table = lake.read_interactions(columns=["timestamp", "model"])
    counts = (
        pa.table(
            {
                "day": pc.strftime(table["timestamp"], format="%Y-%m-%d"),
                "model": pc.fill_null(table["model"], "(none)"),
            }
        )
        .group_by(["day", "model"])
        .aggregate([([], "count_all")])
    )
    per_day: dict[str, dict[str, int]] = {}
    for row in counts.to_pylist():
        per_day.setdefault(row["day"], {})[row["model"]] = row["count_all"]
    reasons: dict[str, int] = {}
    for reason in lake.read_quarantine()["reason"].to_pylist():
        kind = reason.split(":", 1)[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    return {
        "lake": lake.uri,
        "objects": manifest.num_rows,
        "read": pc.sum(manifest["read"]).as_py() or 0,
        "interactions": table.num_rows,
        "quarantined": pc.sum(manifest["quarantined"]).as_py() or 0,
        "duplicates": pc.sum(manifest["duplicates"]).as_py() or 0,
        "per_day": dict(sorted(per_day.items())),
        "quarantine_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
    }
