"""Drift of signals and descriptors between windows, via Evidently's DataDriftPreset.

Only numeric and categorical columns enter the report, never text, so the HTML it
writes holds no prompt or response and therefore no personal data.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd

NUMERIC = [
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "response_length",
    "response_words",
    "length_ratio",
    "repetition",
]
CATEGORICAL = [
    "feedback",
    "refusal",
    "empty",
    "truncated",
    "language_mismatch",
    "pii_echo",
]


def _table(frame: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame(index=frame.index)
    for column in NUMERIC:
        if column in frame and frame[column].notna().any():
            table[column] = frame[column].astype(float)
    for column in CATEGORICAL:
        if column in frame:
            table[column] = frame[column].astype("string").fillna("none")
    return table


def tabular_drift(
    reference: pd.DataFrame, current: pd.DataFrame, html: Path | None = None
) -> dict[str, Any]:
    """Compare the columns both windows have; save Evidently's HTML report if asked."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur = _table(reference), _table(current)
    shared = [c for c in ref.columns if c in cur.columns]
    numeric = [c for c in shared if c in NUMERIC]
    categorical = [c for c in shared if c in CATEGORICAL]
    definition = DataDefinition(
        numerical_columns=numeric, categorical_columns=categorical
    )
    with warnings.catch_warnings():
        # Evidently correlates every column pair; a constant column (no refusals in
        # either window, say) divides by a zero deviation and numpy warns per pair.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report([DataDriftPreset(columns=shared)]).run(
            Dataset.from_pandas(cur[shared], data_definition=definition),
            Dataset.from_pandas(ref[shared], data_definition=definition),
        )
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html))

    columns: dict[str, dict[str, Any]] = {}
    drifted = share = None
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            drifted, share = metric["value"]["count"], metric["value"]["share"]
        elif config["type"].endswith("ValueDrift"):
            method, threshold, value = (
                config["method"],
                config["threshold"],
                metric["value"],
            )
            is_p_value = "p_value" in method
            columns[config["column"]] = {
                "method": method,
                "score": float(value),
                "threshold": threshold,
                "drift": bool(value < threshold if is_p_value else value >= threshold),
            }
    return {
        "drifted_columns": int(drifted or 0),
        "drifted_share": float(share or 0.0),
        "columns": columns,
        "unavailable": sorted(set(NUMERIC + CATEGORICAL) - set(shared)),
    }
