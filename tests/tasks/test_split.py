"""Train and validation without leakage: sessions and near copies never straddle."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.split import assign, groups

SIMILARITY = 0.9


def examples(
    n: int, sessions: list[str | None] | None = None, sources: list[str] | None = None
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "example_id": [f"ex{i:05d}" for i in range(n)],
            "session_id": sessions if sessions is not None else [None] * n,
            "source": sources if sources is not None else ["quality"] * n,
        }
    )


def scattered(n: int, seed: int = 0, dim: int = 64) -> np.ndarray:
    """Unit vectors far apart from each other: no two are near copies."""
    v = np.random.default_rng(seed).normal(size=(n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def split(frame: pd.DataFrame, prompts: np.ndarray, share: float, seed: int = 0):
    return assign(frame, groups(frame, prompts, SIMILARITY), share, seed)


def test_the_turns_of_one_session_all_fall_on_one_side() -> None:
    frame = examples(600, sessions=[f"s{i // 3}" for i in range(600)])
    sides = pd.Series(split(frame, scattered(600), 0.3))
    per_session = sides.groupby(frame["session_id"]).nunique()
    assert (per_session == 1).all()
    assert 0 < (sides == "validation").sum() < 600


def test_turns_of_one_session_share_a_group() -> None:
    frame = examples(4, sessions=["a", "b", "a", "b"])
    labels = groups(frame, scattered(4), SIMILARITY)
    assert labels[0] == labels[2]
    assert labels[1] == labels[3]
    assert labels[0] != labels[1]


def test_near_copy_prompts_in_different_sessions_share_a_group() -> None:
    prompts = scattered(3)
    prompts[2] = prompts[0] + 0.01 * scattered(1, seed=9)[0]
    prompts[2] /= np.linalg.norm(prompts[2])
    labels = groups(examples(3), prompts, SIMILARITY)
    assert labels[0] == labels[2] != labels[1]


def test_near_copy_prompts_all_fall_on_one_side() -> None:
    base = scattered(300)
    copies = base + 0.01 * scattered(300, seed=1)
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    frame = examples(600)
    sides = split(frame, np.vstack([base, copies]), 0.3)
    assert (sides[:300] == sides[300:]).all()
    assert 0 < (sides == "validation").sum() < 600


def test_groups_join_transitively_through_sessions_and_near_copies() -> None:
    prompts = scattered(3)
    prompts[1] = prompts[2]
    # 0 and 1 share a session; 1 and 2 are near copies; so all three are one group.
    labels = groups(examples(3, sessions=["s", "s", None]), prompts, SIMILARITY)
    assert len(set(labels)) == 1


def test_the_split_is_the_same_on_every_run_and_in_any_row_order() -> None:
    frame = examples(500, sessions=[f"s{i // 2}" for i in range(500)])
    prompts = scattered(500)
    first = dict(zip(frame["example_id"], split(frame, prompts, 0.2), strict=True))
    order = np.random.default_rng(5).permutation(500)
    shuffled = frame.iloc[order].reset_index(drop=True)
    again = split(shuffled, prompts[order], 0.2)
    assert dict(zip(shuffled["example_id"], again, strict=True)) == first


def test_an_example_keeps_its_side_when_other_examples_come_and_go() -> None:
    frame = examples(400)
    prompts = scattered(400)
    before = split(frame, prompts, 0.2)
    half = np.arange(0, 400, 2)
    after = split(frame.iloc[half].reset_index(drop=True), prompts[half], 0.2)
    assert (after == before[half]).all()


def test_about_the_validation_share_of_groups_is_held_out() -> None:
    sides = split(examples(2000), scattered(2000, dim=128), 0.1)
    assert 150 <= (sides == "validation").sum() <= 250


def test_another_seed_holds_out_other_groups() -> None:
    frame, prompts = examples(500), scattered(500)
    assert (
        split(frame, prompts, 0.2, seed=0) != split(frame, prompts, 0.2, seed=1)
    ).any()


def test_groups_holding_a_replayed_example_stay_in_train() -> None:
    sessions = [f"s{i // 2}" for i in range(200)]
    sources = ["replay" if i % 4 == 0 else "quality" for i in range(200)]
    frame = examples(200, sessions=sessions, sources=sources)
    # At a share of 1 every group would be held out, but for the replay pins.
    sides = split(frame, scattered(200), 1.0)
    replayed = frame["session_id"].isin(
        frame.loc[frame["source"] == "replay", "session_id"]
    )
    assert (sides[replayed.to_numpy()] == "train").all()
    assert (sides[~replayed.to_numpy()] == "validation").all()


def test_emerging_topic_groups_are_held_out_at_their_own_share():
    n = 2000
    frame = pd.DataFrame(
        {
            "example_id": [f"e{i:05d}" for i in range(n)],
            "source": ["quality"] * n,
            "drift": [True] * n,
        }
    )
    sides = assign(frame, np.arange(n), 0.1, 0, drift_share=0.3)
    assert 500 <= (sides == "validation").sum() <= 700
