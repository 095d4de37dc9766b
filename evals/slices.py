"""The evaluation slices of a dataset version: where a challenger must win or hold.

- `drift`: held-out examples on emerging topics, the target when there are enough;
- `held_out`: the whole validation split, the target otherwise;
- `established`: held-out examples of every established topic together, a guard;
- `topic:<name>`: held-out examples of each established topic, guards;
- `golden`: the hand-kept golden set of the use case, a guard.

Every slice is a list of chats whose last turn is the reference answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from evals import golden


@dataclass(frozen=True)
class Slice:
    """A named set of reference chats and its role in the gate."""

    name: str
    kind: str  # "target", "guard" or "report"
    chats: list[list[dict]]


def build(name: str, validation: pd.DataFrame, min_examples: int) -> list[Slice]:
    """Slices of one dataset version's validation split plus the golden set."""

    def chats(rows: pd.DataFrame) -> list[list[dict]]:
        return [json.loads(m) for m in rows["messages"]]

    drift = validation[validation["drift"]]
    steady = validation[~validation["drift"]]
    target_is_drift = len(drift) >= min_examples
    slices = [
        Slice("drift", "target" if target_is_drift else "report", chats(drift)),
        Slice("held_out", "report" if target_is_drift else "target", chats(validation)),
    ]
    # All established topics together hold even when each topic alone is too small.
    slices.append(Slice("established", "guard", chats(steady)))
    for topic, rows in sorted(steady.groupby("topic"), key=lambda kv: str(kv[0])):
        slices.append(Slice(f"topic:{topic}", "guard", chats(rows)))
    reference = golden.load_golden(name)
    if reference:
        slices.append(Slice("golden", "guard", [e["messages"] for e in reference]))
    return [s for s in slices if s.chats]
