"""The dedup index stays exact while it is built and grown the cheap way.

`bench/soak.py` measures what the sort-based index saves over np.unique; these tests
hold it to the same answers.
"""

from __future__ import annotations

import numpy as np

from tasks.lake import DedupIndex, sorted_unique


def hashes(n: int, seed: int, high: int = 2**63) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, n, dtype=np.uint64)


class TestSortedUnique:
    def test_it_gives_what_np_unique_gives_with_and_without_repeats(self):
        for values in (hashes(10_000, 1), hashes(10_000, 2, high=500), hashes(0, 3)):
            assert np.array_equal(sorted_unique(values), np.unique(values))

    def test_in_place_it_sorts_the_given_array_and_otherwise_leaves_it_alone(self):
        values = hashes(1000, 4, high=100)
        before = values.copy()
        sorted_unique(values)
        assert np.array_equal(values, before)
        sorted_unique(values, in_place=True)
        assert np.array_equal(values, np.sort(before))


class TestDedupIndex:
    def test_many_batches_merge_into_one_sorted_set_of_every_hash_added(self):
        index = DedupIndex(landed=sorted_unique(hashes(5000, 5)))
        batches = [hashes(300, seed, high=2**20) for seed in range(40)]
        for batch in batches:
            index.add(batch)

        everything = np.unique(np.concatenate([index.landed, *index.recent]))
        expected = np.unique(np.concatenate([hashes(5000, 5), *batches]))
        assert np.array_equal(everything, expected)
        assert np.all(index.landed[1:] > index.landed[:-1])
        assert len(index.recent) < 17, "batches were merged into the sorted index"

    def test_seen_finds_landed_and_recent_hashes_and_nothing_else(self):
        index = DedupIndex(landed=sorted_unique(hashes(1000, 6)))
        recent = hashes(10, 7)
        index.add(recent)
        unseen = np.array([1, 2, 3], dtype=np.uint64)

        probe = np.concatenate([hashes(1000, 6)[:5], recent[:5], unseen])

        assert index.seen(probe).tolist() == [True] * 10 + [False] * 3
