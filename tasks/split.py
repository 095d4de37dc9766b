"""Split a dataset into train and validation without leakage.

Examples are grouped first: the turns of one conversation, and examples whose prompts
are near copies, fall in one group (connected components of both relations), and a
whole group goes to one side. A group's side is a hash of its smallest example id, so
the split is the same on every run and an example keeps its side when others come and
go.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tasks.filters import similar_pairs


def groups(frame: pd.DataFrame, prompts: np.ndarray, similarity: float) -> np.ndarray:
    """A group label per row: same session or near-copy prompts, transitively."""
    n = len(frame)
    sessions = pd.factorize(frame["session_id"].fillna(frame["example_id"]))[0]
    # Link each row to the first row of its session, and near copies to each other.
    first = pd.Series(np.arange(n)).groupby(sessions).transform("min").to_numpy()
    rows, cols = [np.arange(n)], [first]
    for i, j in similar_pairs(prompts, prompts, similarity):
        rows.append(i)
        cols.append(j)
    i, j = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def assign(
    frame: pd.DataFrame,
    labels: np.ndarray,
    share: float,
    seed: int,
    drift_share: float | None = None,
) -> np.ndarray:
    """'train' or 'validation' per row; groups holding a replayed row stay in train.

    Groups on an emerging topic may be held out at a higher share: they are few, and
    the drift slice is where a challenger must prove itself.
    """
    keys = pd.Series(frame["example_id"].to_numpy()).groupby(labels).transform("min")
    pinned = (
        pd.Series((frame["source"] == "replay").to_numpy())
        .groupby(labels)
        .transform("any")
        .to_numpy()
    )
    drifted = (
        pd.Series(frame["drift"].to_numpy(bool)).groupby(labels).transform("any")
        if "drift" in frame
        else pd.Series(np.zeros(len(frame), bool))
    ).to_numpy()
    cut = np.where(drifted, share if drift_share is None else drift_share, share)
    buckets = np.array([_bucket(f"{seed}:{key}") for key in keys])
    held_out = (buckets < cut) & ~pinned
    return np.where(held_out, "validation", "train")


def _bucket(key: str) -> float:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
