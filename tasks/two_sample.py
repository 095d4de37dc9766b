"""Did the current window's embeddings come from the reference's distribution?

`mmd_test` is a kernel two-sample test with a permutation p-value, so its false-alarm
rate is the alpha asked for. `evidently_embedding_drift` runs Evidently's four embedding
drift methods on the same vectors, at their fixed default thresholds, for comparison.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from driftloop.errors import DriftloopError

MIN_ROWS = 20
# The pooled kernel matrix is held in memory: 20,000 rows take 3.2 GB as float64.
MAX_POOLED_ROWS = 20_000
# Permutations evaluated per matrix product; bounds the weight matrix to N x 128.
_PERMUTATION_BLOCK = 128
_NEIGHBOURS = 64


class InvalidSample(DriftloopError, ValueError):
    """A sample or test setting the two-sample test cannot work with."""


@dataclass(frozen=True)
class TwoSampleResult:
    """The outcome of one two-sample test between a reference and a current sample."""

    method: str
    statistic: float
    p_value: float
    drift: bool
    alpha: float
    permutations: int
    n_reference: int
    n_current: int


def mmd_test(
    reference: np.ndarray,
    current: np.ndarray,
    alpha: float = 0.01,
    permutations: int = 500,
    seed: int = 0,
) -> TwoSampleResult:
    """Test reference against current with unbiased MMD² and a permutation p-value.

    The Gaussian kernel's bandwidth is the median pairwise distance of the pooled
    sample, which no relabelling changes, so the p-value stays exact.
    """
    _check_setting(alpha, permutations)
    _check_pair(reference, current)

    pooled = np.vstack([reference, current]).astype(np.float64)
    kernel = gaussian_kernel(pooled)
    n, m = len(reference), len(current)
    statistics = _permutation_statistics(kernel, n, permutations, seed)

    observed = statistics[0]
    p_value = (1 + np.count_nonzero(statistics[1:] >= observed)) / (1 + permutations)
    return TwoSampleResult(
        method="mmd",
        statistic=float(observed),
        p_value=float(p_value),
        drift=bool(p_value < alpha),
        alpha=alpha,
        permutations=permutations,
        n_reference=n,
        n_current=m,
    )


def novelty_test(
    reference: np.ndarray,
    current: np.ndarray,
    alpha: float = 0.01,
    permutations: int = 500,
    seed: int = 0,
    quantile: float = 0.01,
) -> TwoSampleResult:
    """Test whether more current points lie far from the reference than chance allows.

    MMD averages over the whole window and misses a new topic at 5% of it. Here a
    point is novel when its nearest reference neighbour is less similar than the
    `quantile` of the reference's own nearest-neighbour similarities (each reference
    point leaving itself out); the statistic counts novel current points, and
    relabelling the pooled sample gives an exact permutation p-value.
    """
    _check_setting(alpha, permutations)
    _check_pair(reference, current)
    if not 0 < quantile < 0.5:
        raise InvalidSample(f"quantile must be in (0, 0.5), got {quantile}")

    pooled = np.vstack([reference, current]).astype(np.float32)
    similarity = pooled @ pooled.T
    np.fill_diagonal(similarity, -np.inf)
    # Each point's nearest reference neighbour is almost always among its 64 nearest
    # pooled neighbours, so relabellings search those; rows where none is a reference
    # point fall back to a full scan.
    k = min(_NEIGHBOURS, len(pooled) - 1)
    top = np.argpartition(-similarity, k, axis=1)[:, :k]
    top_sim = np.take_along_axis(similarity, top, axis=1)
    order = np.argsort(-top_sim, axis=1)
    top, top_sim = (
        np.take_along_axis(top, order, axis=1),
        np.take_along_axis(top_sim, order, axis=1),
    )

    n, total = len(reference), len(pooled)
    rng = np.random.default_rng(seed)
    counts = np.empty(permutations + 1)
    rows = np.arange(total)
    for i in range(permutations + 1):
        labels = rows if i == 0 else rng.permutation(total)
        is_ref = np.zeros(total, dtype=bool)
        is_ref[labels[:n]] = True
        hits = is_ref[top]
        first = hits.argmax(axis=1)
        nearest = top_sim[rows, first]
        missing = ~hits[rows, first]
        if missing.any():
            nearest[missing] = similarity[np.ix_(missing, is_ref)].max(axis=1)
        threshold = np.quantile(nearest[is_ref], quantile)
        counts[i] = np.count_nonzero(nearest[~is_ref] < threshold)

    observed = counts[0]
    p_value = (1 + np.count_nonzero(counts[1:] >= observed)) / (1 + permutations)
    return TwoSampleResult(
        method="novelty",
        statistic=float(observed / len(current)),
        p_value=float(p_value),
        drift=bool(p_value < alpha),
        alpha=alpha,
        permutations=permutations,
        n_reference=n,
        n_current=len(current),
    )


def gaussian_kernel(pooled: np.ndarray) -> np.ndarray:
    """Return exp(-d²/2σ²) for all pairs; σ is the median distance of distinct rows."""
    norms = np.einsum("ij,ij->i", pooled, pooled)
    # In place: fresh N x N temporaries cost more than the arithmetic here.
    squared = pooled @ pooled.T
    squared *= -2.0
    squared += norms[:, None]
    squared += norms[None, :]
    np.maximum(squared, 0.0, out=squared)
    np.fill_diagonal(squared, 0.0)
    # Each pair appears twice, which leaves the median as it is. Repeated texts give
    # zero distances; a median of zeros would collapse the kernel, so skip them.
    positive = squared[squared > 0]
    bandwidth2 = float(np.median(positive)) if positive.size else 1.0
    squared *= -0.5 / bandwidth2
    return np.exp(squared, out=squared)


def _permutation_statistics(
    kernel: np.ndarray, n: int, permutations: int, seed: int
) -> np.ndarray:
    """Return MMD² for the observed split (first) and for each random relabelling.

    A split is an indicator u of the rows labelled reference. With the diagonal
    removed, within-reference mass is uᵀKu, cross mass is rᵀu - uᵀKu (r the row sums)
    and within-current mass is what remains, so every split costs one column of K @ U.
    """
    total = len(kernel)
    m = total - n
    np.fill_diagonal(kernel, 0.0)
    row_sums = kernel.sum(axis=1)
    grand = row_sums.sum()

    rng = np.random.default_rng(seed)
    labels = np.vstack(
        [
            np.arange(total),
            rng.permuted(np.tile(np.arange(total), (permutations, 1)), axis=1),
        ]
    )
    out = np.empty(permutations + 1)
    for start in range(0, permutations + 1, _PERMUTATION_BLOCK):
        block = labels[start : start + _PERMUTATION_BLOCK, :n]
        indicator = np.zeros((total, len(block)))
        indicator[block.T, np.arange(len(block))] = 1.0
        within_ref = np.einsum("ij,ij->j", indicator, kernel @ indicator)
        cross = row_sums @ indicator - within_ref
        within_cur = grand - within_ref - 2.0 * cross
        out[start : start + len(block)] = (
            within_ref / (n * (n - 1))
            + within_cur / (m * (m - 1))
            - 2.0 * cross / (n * m)
        )
    return out


def _check_setting(alpha: float, permutations: int) -> None:
    if not 0 < alpha < 1:
        raise InvalidSample(f"alpha is {alpha}; expected a level between 0 and 1.")
    needed = int(np.ceil(1 / alpha)) - 1
    if permutations < needed:
        raise InvalidSample(
            f"permutations={permutations} cannot give a p-value below alpha={alpha}: "
            f"the smallest is 1/(1 + permutations). Use at least {needed}."
        )


def _check_pair(reference: np.ndarray, current: np.ndarray) -> None:
    _check_sample("reference", reference)
    _check_sample("current", current)
    if reference.shape[1] != current.shape[1]:
        raise InvalidSample(
            f"reference has {reference.shape[1]} dimensions and current has "
            f"{current.shape[1]}; expected the same: embed both with one embedder."
        )
    pooled = len(reference) + len(current)
    if pooled > MAX_POOLED_ROWS:
        raise InvalidSample(
            f"reference and current have {pooled:,} rows together; the MMD test holds "
            f"a kernel over all pairs and takes at most {MAX_POOLED_ROWS:,}. Sample "
            "each window down first."
        )


def _check_sample(name: str, sample: np.ndarray) -> None:
    if not isinstance(sample, np.ndarray) or sample.ndim != 2:
        shape = getattr(sample, "shape", type(sample).__name__)
        raise InvalidSample(
            f"{name} is {shape}; expected a 2-D array with one embedding per row."
        )
    if len(sample) < MIN_ROWS:
        raise InvalidSample(
            f"{name} has {len(sample)} rows; the MMD test needs at least {MIN_ROWS} "
            "rows in each sample. Widen the window or lower its sampling."
        )
    bad = int(np.count_nonzero(~np.isfinite(sample).all(axis=1)))
    if bad:
        raise InvalidSample(
            f"{name} has {bad} rows with NaN or infinite values; expected finite "
            "embeddings. Re-embed those texts or drop them."
        )


def evidently_embedding_drift(
    reference: np.ndarray, current: np.ndarray
) -> dict[str, dict]:
    """Run Evidently's four embedding drift methods at their default thresholds."""
    _check_pair(reference, current)
    # Evidently's Report adds a t-SNE plot per metric (seconds to minutes); the
    # method objects it calls are the same and seeded, so call them directly. Its
    # imports warn about numpy and litestar internals nobody here can change.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from evidently.metrics.embeddings import (
            DistanceDriftMethod,
            MMDDriftMethod,
            ModelDriftMethod,
            RatioDriftMethod,
        )

    methods = {
        "model": ModelDriftMethod(),
        "distance": DistanceDriftMethod(),
        "ratio": RatioDriftMethod(),
        "mmd": MMDDriftMethod(),
    }
    results = {}
    for name, method in methods.items():
        # The model method adds a target column to its inputs: give each a fresh copy.
        score, drift, _ = method(_frame(current), _frame(reference))
        results[name] = {"drift": bool(drift), "score": float(score)}
    return results


def _frame(vectors: np.ndarray) -> pd.DataFrame:
    columns = [f"e{i}" for i in range(vectors.shape[1])]
    return pd.DataFrame(np.asarray(vectors, dtype=np.float64), columns=columns)
