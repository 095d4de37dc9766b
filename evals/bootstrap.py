"""Is the challenger better than the champion on the same examples, and by how much?

A paired bootstrap: both models are scored on the same examples, so the per-example
difference is resampled, and what varies between examples (some questions are hard for
every model) cancels out. The interval is scipy's BCa interval of the mean difference.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.stats import bootstrap

from driftloop.errors import ConfigError

DEFAULT_SAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
# Fewer resamples than this give interval ends that move with the seed.
MIN_SAMPLES = 100
MIN_EXAMPLES = 2


def paired_bootstrap(
    champion: np.ndarray,
    challenger: np.ndarray,
    lower_is_better: bool,
    samples: int = DEFAULT_SAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """Return the mean improvement of challenger over champion and its interval.

    The improvement is positive when the challenger is better: champion - challenger
    when lower scores are better, challenger - champion otherwise. `p_value` is the
    share of resampled mean improvements at or below zero, a one-sided bootstrap
    p-value for "the challenger is no better".
    """
    champion = _scores(champion, "champion")
    challenger = _scores(challenger, "challenger")
    _check(champion, challenger, samples, confidence)

    improvement = champion - challenger if lower_is_better else challenger - champion
    mean = float(improvement.mean())
    low, high, p_value, method = _interval(improvement, samples, confidence, seed)
    return {
        "n": len(improvement),
        "champion": float(champion.mean()),
        "challenger": float(challenger.mean()),
        "improvement": mean,
        "low": low,
        "high": high,
        "p_value": p_value,
        "confidence": confidence,
        "method": method,
    }


def _interval(
    improvement: np.ndarray, samples: int, confidence: float, seed: int
) -> tuple[float, float, float, str]:
    """Return (low, high, p_value, method) for the mean of `improvement`."""
    if np.ptp(improvement) == 0:
        # Every resample has the same mean, and BCa divides by its zero spread.
        value = float(improvement[0])
        return value, value, float(value <= 0), "degenerate"

    # Resampling the differences is resampling the pairs: the same interval as
    # scipy's paired=True over both arrays, with one array to carry.
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        # BCa on a few examples can be undefined; the percentile interval then stands.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = bootstrap(
            (improvement,),
            np.mean,
            n_resamples=samples,
            confidence_level=confidence,
            method="BCa",
            vectorized=True,
            # random_state rather than rng: it works from scipy 1.13, the floor.
            random_state=rng,
        )
    distribution = result.bootstrap_distribution
    low, high = result.confidence_interval
    method = "BCa"
    if not (np.isfinite(low) and np.isfinite(high)):
        tail = (1 - confidence) / 2 * 100
        low, high = np.percentile(distribution, [tail, 100 - tail])
        method = "percentile"
    return float(low), float(high), float(np.mean(distribution <= 0)), method


def _scores(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ConfigError(
            f"{name} scores have shape {array.shape}, expected one score per example "
            "(a 1-D array). Pass the per-example metric, not a matrix or a mean."
        )
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ConfigError(
            f"{name} scores hold {bad} NaN or infinite values, expected finite "
            "numbers. Find the examples the model failed to score and fix or drop them "
            "from both models' scores."
        )
    return array


def _check(
    champion: np.ndarray, challenger: np.ndarray, samples: int, confidence: float
) -> None:
    if len(champion) != len(challenger):
        raise ConfigError(
            f"champion has {len(champion)} scores and challenger {len(challenger)}; "
            "a paired comparison expects one score per example from each model, in "
            "the same order. Score both models on the same examples."
        )
    if len(champion) < MIN_EXAMPLES:
        raise ConfigError(
            f"paired_bootstrap got {len(champion)} example(s), expected at least "
            f"{MIN_EXAMPLES}: one example has no spread to resample. Add examples."
        )
    if not isinstance(samples, int) or samples < MIN_SAMPLES:
        raise ConfigError(
            f"samples is {samples!r}, expected a whole number of at least "
            f"{MIN_SAMPLES}; the default is {DEFAULT_SAMPLES}."
        )
    if not 0 < confidence < 1:
        raise ConfigError(
            f"confidence is {confidence!r}, expected a level strictly between 0 and 1, "
            f"such as {DEFAULT_CONFIDENCE}."
        )
