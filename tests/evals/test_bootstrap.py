"""The paired bootstrap: finds real improvements, not noise, and refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest

from driftloop.errors import ConfigError
from evals.bootstrap import paired_bootstrap


def scores(n: int, seed: int, mean: float = 2.0, spread: float = 0.5) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, spread, n)


class TestInterval:
    def test_a_clear_paired_improvement_gives_an_interval_above_zero(self):
        champion = scores(40, seed=1)
        challenger = champion - 0.3 + scores(40, seed=2, mean=0.0, spread=0.05)
        result = paired_bootstrap(champion, challenger, lower_is_better=True)
        assert result["improvement"] == pytest.approx(0.3, abs=0.02)
        assert 0 < result["low"] < result["improvement"] < result["high"]
        assert result["p_value"] == 0.0

    def test_pure_noise_gives_an_interval_that_includes_zero(self):
        result = paired_bootstrap(scores(40, 3), scores(40, 4), lower_is_better=True)
        assert result["low"] < 0 < result["high"]
        assert 0.05 < result["p_value"] < 0.95

    def test_pairing_finds_a_small_improvement_under_large_per_example_offsets(self):
        offset = scores(30, seed=5, mean=0.0, spread=5.0)
        champion = offset + 1.0
        challenger = offset + 0.9 + scores(30, seed=6, mean=0.0, spread=0.01)
        paired = paired_bootstrap(champion, challenger, lower_is_better=True)
        # The same scores with their pairs broken: the offsets swamp the change.
        unpaired = np.random.default_rng(7).permutation(challenger)
        broken = paired_bootstrap(champion, unpaired, lower_is_better=True)
        assert paired["low"] > 0.09
        assert broken["low"] < 0 < broken["high"]

    def test_lower_is_better_flips_the_sign_of_the_improvement(self):
        champion, challenger = scores(25, 8), scores(25, 9, mean=1.8)
        lower = paired_bootstrap(champion, challenger, lower_is_better=True)
        higher = paired_bootstrap(champion, challenger, lower_is_better=False)
        assert lower["improvement"] == pytest.approx(-higher["improvement"])
        assert lower["low"] == pytest.approx(-higher["high"], abs=1e-9)
        assert lower["high"] == pytest.approx(-higher["low"], abs=1e-9)

    def test_the_result_holds_the_count_and_both_means(self):
        result = paired_bootstrap(
            [1.0, 2.0, 4.0], [1.0, 1.0, 2.0], lower_is_better=True
        )
        assert result["n"] == 3
        assert result["champion"] == pytest.approx(7 / 3)
        assert result["challenger"] == pytest.approx(4 / 3)
        assert result["improvement"] == pytest.approx(1.0)

    def test_the_same_seed_gives_the_same_interval(self):
        first = paired_bootstrap(scores(20, 10), scores(20, 11), True, seed=3)
        again = paired_bootstrap(scores(20, 10), scores(20, 11), True, seed=3)
        assert (first["low"], first["high"]) == (again["low"], again["high"])

    def test_identical_differences_give_an_interval_of_that_one_value(self):
        result = paired_bootstrap(
            [3.0, 4.0, 5.0], [2.5, 3.5, 4.5], lower_is_better=True
        )
        assert (result["low"], result["high"]) == pytest.approx((0.5, 0.5))
        assert result["p_value"] == 0.0


class TestRefusals:
    def test_scores_of_different_lengths_are_refused(self):
        with pytest.raises(ConfigError, match="champion has 3 scores and challenger 2"):
            paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0], lower_is_better=True)

    def test_a_single_example_is_refused(self):
        with pytest.raises(
            ConfigError, match=r"got 1 example\(s\), expected at least 2"
        ):
            paired_bootstrap([1.0], [2.0], lower_is_better=True)

    def test_nan_scores_are_refused(self):
        with pytest.raises(ConfigError, match="challenger scores hold 1 NaN"):
            paired_bootstrap([1.0, 2.0], [1.0, np.nan], lower_is_better=True)

    def test_too_few_resamples_are_refused(self):
        with pytest.raises(
            ConfigError, match=r"samples is 10, expected .* at least 100"
        ):
            paired_bootstrap([1.0, 2.0], [1.0, 3.0], True, samples=10)

    def test_a_confidence_outside_zero_and_one_is_refused(self):
        with pytest.raises(ConfigError, match="confidence is 95, expected"):
            paired_bootstrap([1.0, 2.0], [1.0, 3.0], True, confidence=95)
