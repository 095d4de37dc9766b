"""Windows of interactions: from the lake by time, or from log files given by hand."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from driftloop.errors import ConfigError
from tasks.lake import Lake

_SPAN = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_span(text: str) -> timedelta:
    """Read a span such as 24h, 7d, 90m or 2w."""
    match = _SPAN.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ConfigError(
            f"window {text!r} is not a span; expected e.g. 24h, 7d, 90m or 2w"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_time(text: str) -> datetime:
    """Read an ISO date or datetime; naive values are UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"time {text!r} is not ISO-8601; expected e.g. 2026-11-12 or "
            "2026-11-12T06:00"
        ) from None
    return (
        moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    )


@dataclass(frozen=True)
class Window:
    """A half-open time range [start, end), UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ConfigError(
                f"window end {self.end:%Y-%m-%d %H:%M} is not after its start "
                f"{self.start:%Y-%m-%d %H:%M}"
            )

    def label(self) -> str:
        return f"{self.start:%Y-%m-%dT%H:%M}/{self.end:%Y-%m-%dT%H:%M}"


def load_window(lake: Lake, window: Window, model: str | None = None) -> pd.DataFrame:
    """The committed interactions of one use case (or all) inside the window."""
    table = lake.read_interactions(
        window.start.date(), (window.end - timedelta(microseconds=1)).date()
    )
    ts = table["timestamp"]
    mask = pc.and_(
        pc.greater_equal(ts, pa.scalar(window.start, ts.type)),
        pc.less(ts, pa.scalar(window.end, ts.type)),
    )
    if model is not None:
        mask = pc.and_(mask, pc.equal(pc.fill_null(table["model"], ""), model))
    return table.filter(mask).to_pandas()


def load_logs(path: str) -> pd.DataFrame:
    """Read log files (any shape ingestion accepts) into a frame, without a lake."""
    from tasks.ingest import normalize_objects

    table, _ = normalize_objects(path)
    return table.to_pandas()


def models_in(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["model"].dropna().unique().tolist())


def stratified_sample(frame: pd.DataFrame, size: int, seed: int = 0) -> pd.DataFrame:
    """A sample spread over model versions and hours in proportion to their traffic."""
    # A canonical order first: the same rows then give the same sample and the same
    # permutation test, whatever order the lake's parts were read in.
    frame = frame.sort_values(["timestamp", "request_id"], kind="stable")
    if len(frame) <= size:
        return frame.reset_index(drop=True)
    strata = (
        frame["model_version"].fillna("")
        + "|"
        + frame["timestamp"].dt.strftime("%Y%m%d%H")
    )
    rng = np.random.default_rng(seed)
    picked = []
    counts = strata.value_counts(sort=False).sort_index()
    # Largest-remainder allocation: quotas sum to `size` exactly.
    exact = counts.to_numpy() * size / len(frame)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota))[: size - quota.sum()]] += 1
    for (name, _), take in zip(counts.items(), quota, strict=True):
        rows = np.flatnonzero((strata == name).to_numpy())
        picked.extend(rng.choice(rows, size=take, replace=False).tolist())
    return frame.iloc[sorted(picked)].reset_index(drop=True)
