"""The MMD test holds its false-alarm rate, finds a clear shift, and refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from tasks.two_sample import (
    InvalidSample,
    TwoSampleResult,
    evidently_embedding_drift,
    mmd_test,
    novelty_test,
)

DIM = 16
CENTRES = np.random.default_rng(42).normal(size=(6, DIM))
EVEN = np.array([0.2, 0.2, 0.2, 0.2, 0.2, 0.0])
# A topic absent from the reference makes up a fifth of the shifted window.
NEW_TOPIC = np.array([0.16, 0.16, 0.16, 0.16, 0.16, 0.2])


def topics(
    n: int, seed: int, weights: np.ndarray = EVEN, spread: float = 0.6
) -> np.ndarray:
    """Unit vectors around topic centres, shaped like sentence embeddings."""
    rng = np.random.default_rng(seed)
    topic = rng.choice(len(CENTRES), size=n, p=weights)
    vectors = CENTRES[topic] + spread * rng.normal(size=(n, DIM))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² written out term by term, for a golden value."""
    pooled = np.vstack([x, y])
    squared = ((pooled[:, None] - pooled[None]) ** 2).sum(axis=-1)
    distinct = squared[np.triu_indices(len(pooled), k=1)]
    kernel = np.exp(-squared / (2 * np.median(distinct[distinct > 0])))
    n, m = len(x), len(y)
    within_x, within_y = kernel[:n, :n], kernel[n:, n:]
    return (
        (within_x.sum() - np.trace(within_x)) / (n * (n - 1))
        + (within_y.sum() - np.trace(within_y)) / (m * (m - 1))
        - 2 * kernel[:n, n:].mean()
    )


class TestStatistic:
    def test_the_statistic_is_the_unbiased_mmd2_with_the_median_bandwidth(self):
        x, y = topics(30, seed=1), topics(45, seed=2, weights=NEW_TOPIC)
        result = mmd_test(x, y)
        assert result.statistic == pytest.approx(brute_force_mmd2(x, y), rel=1e-9)

    def test_the_result_records_the_test_and_its_inputs(self):
        result = mmd_test(topics(30, 1), topics(40, 2), alpha=0.05, permutations=99)
        assert isinstance(result, TwoSampleResult)
        assert (result.method, result.alpha, result.permutations) == ("mmd", 0.05, 99)
        assert (result.n_reference, result.n_current) == (30, 40)

    def test_the_same_seed_gives_the_same_p_value(self):
        x, y = topics(40, 1), topics(40, 2)
        assert mmd_test(x, y, seed=7) == mmd_test(x, y, seed=7)

    def test_repeated_rows_do_not_collapse_the_kernel(self):
        x = np.repeat(topics(5, 1), 8, axis=0)
        y = np.repeat(topics(5, 2, weights=NEW_TOPIC), 8, axis=0)
        assert np.isfinite(mmd_test(x, y).statistic)

    def test_identical_samples_are_not_drift(self):
        x = topics(50, 1)
        result = mmd_test(x, x.copy())
        assert not result.drift
        assert result.p_value > 0.5


class TestCalibration:
    def test_under_the_null_the_false_alarm_rate_is_alpha(self):
        pool = topics(2_000, seed=0)
        trials, alpha = 1_000, 0.05
        alarms = 0
        for trial in range(trials):
            rng = np.random.default_rng(1_000 + trial)
            rows = rng.choice(len(pool), size=65, replace=False)
            reference, current = pool[rows[:25]], pool[rows[25:]]
            result = mmd_test(reference, current, alpha, permutations=99, seed=trial)
            alarms += result.drift
        low, high = binom.interval(0.999, trials, alpha)
        assert low <= alarms <= high, f"{alarms} false alarms in {trials} trials"

    def test_a_new_topic_in_a_fifth_of_the_window_is_drift(self):
        result = mmd_test(topics(200, 1), topics(200, 2, weights=NEW_TOPIC))
        assert result.drift
        assert result.p_value == pytest.approx(1 / 501)


class TestRefusals:
    def test_a_sample_under_20_rows_is_refused_with_the_minimum(self):
        with pytest.raises(
            InvalidSample, match=r"reference has 12 rows; .* at least 20"
        ):
            mmd_test(topics(12, 1), topics(30, 2))

    def test_samples_of_different_widths_are_refused_with_both_widths(self):
        with pytest.raises(
            InvalidSample, match="reference has 16 dimensions and current has 8"
        ):
            mmd_test(topics(30, 1), topics(30, 2)[:, :8])

    def test_nan_rows_are_refused_with_their_count(self):
        current = topics(30, 2)
        current[[3, 9], 0] = np.nan
        with pytest.raises(InvalidSample, match="current has 2 rows with NaN"):
            mmd_test(topics(30, 1), current)

    def test_more_pooled_rows_than_the_kernel_may_hold_are_refused(self):
        reference, current = np.zeros((12_000, 2)), np.ones((8_001, 2))
        with pytest.raises(
            InvalidSample, match=r"20,001 rows together.* at most 20,000"
        ):
            mmd_test(reference, current)

    def test_a_one_dimensional_sample_is_refused(self):
        with pytest.raises(InvalidSample, match=r"current is \(30,\); expected a 2-D"):
            mmd_test(topics(30, 1), np.zeros(30))

    def test_an_alpha_outside_zero_to_one_is_refused(self):
        with pytest.raises(InvalidSample, match=r"alpha is 1\.5; expected a level"):
            mmd_test(topics(30, 1), topics(30, 2), alpha=1.5)

    def test_too_few_permutations_to_reach_alpha_are_refused(self):
        with pytest.raises(
            InvalidSample, match=r"permutations=50 cannot .* alpha=0\.01.* at least 99"
        ):
            mmd_test(topics(30, 1), topics(30, 2), alpha=0.01, permutations=50)


class TestEvidently:
    def test_each_of_the_four_methods_gives_a_flag_and_a_score(self):
        results = evidently_embedding_drift(topics(100, 1), topics(100, 2))
        assert set(results) == {"model", "distance", "ratio", "mmd"}
        for result in results.values():
            assert isinstance(result["drift"], bool)
            assert isinstance(result["score"], float)

    def test_all_four_flag_a_new_topic_in_a_fifth_of_the_window(self):
        shifted = topics(200, 2, weights=NEW_TOPIC)
        results = evidently_embedding_drift(topics(200, 1), shifted)
        assert all(result["drift"] for result in results.values()), results

    def test_the_same_input_gives_the_same_results(self):
        reference, current = topics(100, 1), topics(100, 2)
        first = evidently_embedding_drift(reference, current)
        assert evidently_embedding_drift(reference, current) == first

    def test_samples_of_different_widths_are_refused(self):
        with pytest.raises(InvalidSample, match="16 dimensions and current has 8"):
            evidently_embedding_drift(topics(30, 1), topics(30, 2)[:, :8])


# A topic absent from the reference at 5% of the window: the share MMD misses.
SMALL_NEW_TOPIC = np.array([0.19, 0.19, 0.19, 0.19, 0.19, 0.05])


def tight_topics(n: int, seed: int, weights: np.ndarray = EVEN) -> np.ndarray:
    """Topics that are tight clusters, as templated support questions are."""
    return topics(n, seed, weights, spread=0.15)


class TestNovelty:
    def test_under_the_null_the_false_alarm_rate_is_alpha(self):
        pool = tight_topics(3_000, seed=5)
        trials, alpha = 300, 0.05
        alarms = 0
        for trial in range(trials):
            rng = np.random.default_rng(5_000 + trial)
            rows = rng.choice(len(pool), size=200, replace=False)
            result = novelty_test(
                pool[rows[:100]],
                pool[rows[100:]],
                alpha,
                permutations=99,
                seed=trial,
                quantile=0.05,
            )
            alarms += result.drift
        low, high = binom.interval(0.999, trials, alpha)
        assert low <= alarms <= high, f"{alarms} false alarms in {trials} trials"

    def test_a_new_topic_at_five_percent_is_caught_where_mmd_is_not(self):
        reference = tight_topics(1_000, 1)
        current = tight_topics(1_000, 2, weights=SMALL_NEW_TOPIC)
        novelty = novelty_test(reference, current, alpha=0.01 / 3)
        assert novelty.drift and novelty.p_value == pytest.approx(1 / 501)
        assert not mmd_test(reference, current, alpha=0.01 / 3).drift
        assert novelty.statistic > 0.04  # about the new topic's share

    def test_the_statistic_is_the_share_of_current_points_unlike_any_reference_point(
        self,
    ):
        same = novelty_test(tight_topics(500, 3), tight_topics(500, 4))
        assert same.method == "novelty"
        assert same.statistic < 0.03
        assert not same.drift

    def test_a_quantile_outside_the_open_half_interval_is_refused(self):
        with pytest.raises(InvalidSample, match=r"quantile must be in \(0, 0.5\)"):
            novelty_test(topics(50, 1), topics(50, 2), quantile=0.5)
