"""A tiny base model, really pretrained once per session, for the training tests."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tasks.lm import BaseModelSettings, pretrain
from tasks.simulate import SimulationConfig, iter_interactions

# Small enough that pretraining takes seconds on two cores, big enough to learn.
TINY = {
    "hidden_size": 64,
    "layers": 2,
    "heads": 4,
    "intermediate_size": 172,
    "max_length": 256,
    "batch_size": 8,
    "learning_rate": 3e-3,
    "seed": 0,
    "device": "cpu",
}


def support_chats(count: int, seed: int = 1) -> list[list[dict]]:
    """Return simulated support chats, each ending with the assistant's answer."""
    config = SimulationConfig(
        days=1, per_day=2 * count, seed=seed, scenario="none", malformed=False
    )
    chats = (
        [dict(m) for m in record["messages"]]
        + [{"role": "assistant", "content": record["response"]}]
        for record in iter_interactions(config)
        if "response" in record
    )
    return list(itertools.islice(chats, count))


@pytest.fixture(scope="session")
def pretraining_chats() -> list[list[dict]]:
    return support_chats(120)


@pytest.fixture(scope="session")
def tiny_base(
    tmp_path_factory: pytest.TempPathFactory, pretraining_chats: list[list[dict]]
) -> tuple[Path, dict]:
    """Pretrain a tiny base on simulated support chats; return its folder and result."""
    out = tmp_path_factory.mktemp("tiny-base")
    settings = BaseModelSettings(**TINY, epochs=3)
    return out, pretrain(pretraining_chats, out, settings)
