"""Behaviour signals: the right figures, intervals that cover them, unavailable when empty."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.signals import flatten, share, signals_by_version, window_signals


def frame(n=100, **columns):
    base = {
        "latency_ms": [float(i) for i in range(1, n + 1)],
        "prompt_tokens": [10] * n,
        "completion_tokens": [20] * n,
        "feedback": [-1] * 10 + [1] * 30 + [None] * (n - 40),
        "corrected_response": ["fixed"] * 5 + [None] * (n - 5),
        "task_outcome": ["resolved"] * 80 + ["escalated"] * (n - 80),
        "model_version": ["v1"] * (n // 2) + ["v2"] * (n - n // 2),
    }
    base.update(columns)
    return pd.DataFrame(base)


def test_latency_percentiles_and_token_means_are_computed():
    signals = window_signals(frame())
    assert signals["volume"] == 100
    assert signals["latency_p50_ms"] == pytest.approx(50.5)
    assert signals["latency_p99_ms"] == pytest.approx(99.01)
    assert signals["completion_tokens_mean"] == 20


def test_thumbs_down_share_counts_only_rated_answers_with_a_wilson_interval():
    td = window_signals(frame())["thumbs_down_share"]
    assert td["value"] == pytest.approx(10 / 40)
    assert td["ci_low"] < 0.25 < td["ci_high"]
    assert td["ci_low"] == pytest.approx(0.1419, abs=1e-3)  # Wilson, 10 of 40


def test_correction_rate_and_task_success_are_shares_of_the_window():
    signals = window_signals(frame())
    assert signals["correction_rate"]["value"] == pytest.approx(0.05)
    assert signals["task_success"]["value"] == pytest.approx(0.80)


def test_a_signal_without_data_is_unavailable_with_its_reason_not_zero():
    signals = window_signals(frame(feedback=[None] * 100, task_outcome=[None] * 100))
    assert signals["thumbs_down_share"] == {
        "available": False,
        "reason": "column feedback is empty in this window",
    }
    assert signals["task_success"]["available"] is False


def test_signals_are_split_by_model_version():
    by_version = signals_by_version(frame())
    assert sorted(by_version) == ["v1", "v2"]
    assert by_version["v1"]["volume"] == 50


def test_flatten_keeps_values_and_intervals_and_skips_unavailable():
    flat = flatten(
        {"volume": 3, "td": share(1, 4), "x": {"available": False}}, "signal."
    )
    assert flat["signal.volume"] == 3
    assert flat["signal.td"] == 0.25
    assert "signal.td.ci_low" in flat and "signal.x" not in flat


def test_a_share_of_nothing_is_unavailable():
    assert share(0, 0)["available"] is False
