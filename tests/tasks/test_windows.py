"""Windows: spans and times parse or are refused clearly; samples are stratified."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from driftloop.errors import ConfigError
from tasks.windows import Window, parse_span, parse_time, stratified_sample


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("90m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_a_span_is_read(text, span):
    assert parse_span(text) == span


@pytest.mark.parametrize("text", ["", "24", "0h", "h", "1y", "-1d"])
def test_a_bad_span_is_refused_with_examples(text):
    with pytest.raises(ConfigError, match=r"expected e\.g\. 24h, 7d"):
        parse_span(text)


def test_a_naive_time_is_utc_and_an_offset_is_converted():
    assert parse_time("2026-11-12") == datetime(2026, 11, 12, tzinfo=UTC)
    assert parse_time("2026-11-12T02:00+02:00") == datetime(2026, 11, 12, tzinfo=UTC)


def test_a_bad_time_is_refused():
    with pytest.raises(ConfigError, match="is not ISO-8601"):
        parse_time("yesterday")


def test_a_window_that_ends_before_it_starts_is_refused():
    with pytest.raises(ConfigError, match="is not after its start"):
        Window(datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))


def test_a_stratified_sample_keeps_each_version_and_hour_in_proportion():
    rows = []
    for hour in range(4):
        for i in range(100 if hour < 2 else 300):
            rows.append(
                {
                    "request_id": f"r{len(rows)}",
                    "model_version": "v1" if i % 4 else "v2",
                    "timestamp": pd.Timestamp(2026, 11, 2, hour, tz="UTC"),
                    "i": len(rows),
                }
            )
    frame = pd.DataFrame(rows)
    sample = stratified_sample(frame, 200, seed=1)
    assert len(sample) == 200
    assert (sample["timestamp"].dt.hour >= 2).sum() == 150
    assert (sample["model_version"] == "v2").sum() == 50
    assert sample.equals(stratified_sample(frame, 200, seed=1))


def test_a_window_smaller_than_the_sample_is_kept_whole():
    frame = pd.DataFrame(
        {
            "model_version": ["v1"] * 5,
            "request_id": list("abcde"),
            "timestamp": pd.Timestamp(2026, 11, 2, tz="UTC"),
        }
    )
    assert len(stratified_sample(frame, 100)) == 5


def test_the_sample_does_not_depend_on_the_order_rows_arrive_in():
    rows = [
        {
            "request_id": f"r{i}",
            "model_version": "v1",
            "timestamp": pd.Timestamp(2026, 11, 2, i % 24, tz="UTC"),
        }
        for i in range(500)
    ]
    frame = pd.DataFrame(rows)
    shuffled = frame.sample(frac=1.0, random_state=3)
    assert stratified_sample(frame, 100).equals(stratified_sample(shuffled, 100))
