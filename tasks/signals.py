"""Behaviour signals of a window: volume, latency, tokens, feedback, success.

Shares come with Wilson 95% intervals, since a thumbs-down share over 40 rated answers
means little without one. A signal whose column is empty in the window is reported as
unavailable with the reason, never as zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

SUCCESS_OUTCOMES = frozenset(
    {"resolved", "success", "succeeded", "completed", "solved"}
)


def share(hits: int, total: int) -> dict[str, Any]:
    """A proportion with its Wilson 95% interval; unavailable when nothing counted."""
    if total == 0:
        return {"available": False, "reason": "no rows to count", "n": 0}
    interval = binomtest(hits, total).proportion_ci(
        confidence_level=0.95, method="wilson"
    )
    return {
        "available": True,
        "value": hits / total,
        "ci_low": float(interval.low),
        "ci_high": float(interval.high),
        "hits": hits,
        "n": total,
    }


def _unavailable(column: str) -> dict[str, Any]:
    return {"available": False, "reason": f"column {column} is empty in this window"}


def window_signals(frame: pd.DataFrame) -> dict[str, Any]:
    """Compute the behaviour signals of one window of interactions."""
    signals: dict[str, Any] = {"volume": len(frame)}

    latency = frame["latency_ms"].dropna() if "latency_ms" in frame else pd.Series([])
    if len(latency):
        for q in (50, 95, 99):
            signals[f"latency_p{q}_ms"] = float(np.percentile(latency, q))
    else:
        signals["latency_ms"] = _unavailable("latency_ms")

    for column in ("prompt_tokens", "completion_tokens"):
        values = frame[column].dropna() if column in frame else pd.Series([])
        signals[f"{column}_mean"] = (
            float(values.mean()) if len(values) else _unavailable(column)
        )

    feedback = frame["feedback"].dropna() if "feedback" in frame else pd.Series([])
    signals["feedback_rate"] = share(len(feedback), len(frame))
    signals["thumbs_down_share"] = (
        share(int((feedback == -1).sum()), len(feedback))
        if len(feedback)
        else _unavailable("feedback")
    )

    corrected = (
        frame["corrected_response"].notna() if "corrected_response" in frame else None
    )
    signals["correction_rate"] = (
        share(int(corrected.sum()), len(frame))
        if corrected is not None and len(frame)
        else _unavailable("corrected_response")
    )

    outcomes = (
        frame["task_outcome"].dropna() if "task_outcome" in frame else pd.Series([])
    )
    signals["task_success"] = (
        share(int(outcomes.str.lower().isin(SUCCESS_OUTCOMES).sum()), len(outcomes))
        if len(outcomes)
        else _unavailable("task_outcome")
    )
    return signals


def signals_by_version(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The same signals for each model version serving in the window."""
    versions = frame["model_version"].fillna("(unknown)")
    return {
        str(v): window_signals(part) for v, part in frame.groupby(versions, sort=True)
    }


def flatten(signals: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric figures of a signals dict as flat metric names for MLflow."""
    out: dict[str, float] = {}
    for name, value in signals.items():
        key = f"{prefix}{name}"
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[key] = float(value)
        elif isinstance(value, dict) and value.get("available"):
            for part in ("value", "ci_low", "ci_high"):
                out[f"{key}.{part}" if part != "value" else key] = float(value[part])
    return out
