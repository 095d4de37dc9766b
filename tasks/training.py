"""What pretraining and fine-tuning share: batches, optimiser steps, held-out loss."""

from __future__ import annotations

import math
import random
import resource
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

# Labels the loss skips: every token that is not an assistant answer.
IGNORE = -100
# Enough steps for AdamW's moment estimates to settle before the full rate applies.
WARMUP_SHARE = 0.05
MAX_WARMUP_STEPS = 50
# The learning rate ends at this share of its peak, not at zero, so the last steps
# still learn something.
FINAL_LR_SHARE = 0.1
# Gradients above this norm are scaled down: a rare long chat cannot throw the run.
MAX_GRAD_NORM = 1.0
# Chats are sorted by length within pools of this many batches, so a batch pads little
# while the order still changes every epoch.
POOL_BATCHES = 50

Example = dict[str, list[int]]
StepCallback = Callable[[dict[str, Any]], None]


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators, so a run can be repeated."""
    random.seed(seed)
    torch.manual_seed(seed)


def epoch_batches(
    examples: list[Example], batch_size: int, rng: random.Random
) -> list[list[Example]]:
    """Split `examples` into batches of similar length, in a new order each call."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    pool = batch_size * POOL_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(
            order[start : start + pool], key=lambda i: len(examples[i]["input_ids"])
        )
        batches += [
            [examples[i] for i in chunk[at : at + batch_size]]
            for at in range(0, len(chunk), batch_size)
        ]
    rng.shuffle(batches)
    return batches


def total_steps(examples: int, batch_size: int, epochs: int, cap: int | None) -> int:
    """Return the optimiser steps of `epochs` passes, at most `cap` when one is set."""
    per_epoch = -(-examples // batch_size)
    return min(per_epoch * epochs, cap or per_epoch * epochs)


def step_batches(
    examples: list[Example], batch_size: int, seed: int, total: int
) -> Iterator[list[Example]]:
    """Yield `total` batches, epoch after epoch, in a new seeded order each epoch."""
    rng = random.Random(seed)
    served = 0
    while served < total:
        for batch in epoch_batches(examples, batch_size, rng)[: total - served]:
            served += 1
            yield batch


def collate(batch: list[Example], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """Pad a batch on the right into tensors on `device`."""
    width = max(len(example["input_ids"]) for example in batch)

    def padded(key: str, fill: int) -> torch.Tensor:
        rows = [e[key] + [fill] * (width - len(e[key])) for e in batch]
        return torch.tensor(rows, dtype=torch.long, device=device)

    return {
        "input_ids": padded("input_ids", pad_id),
        "attention_mask": padded("attention_mask", 0),
        "labels": padded("labels", IGNORE),
    }


def trained_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Count the tokens of a batch that carry loss once labels are shifted."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm up linearly, then decay along a cosine to FINAL_LR_SHARE of the peak."""
    warmup = min(MAX_WARMUP_STEPS, max(1, int(total_steps * WARMUP_SHARE)))

    def share(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, total_steps - warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        return FINAL_LR_SHARE + (1 - FINAL_LR_SHARE) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, share)


@dataclass
class Trainer:
    """Run optimiser steps on one model and keep the figures a run reports."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    pad_id: int
    device: str
    steps: int = 0
    tokens_seen: int = 0
    # Time spent in optimiser steps only: evaluation and saving are left out.
    train_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)

    def step(self, batch: list[Example]) -> float:
        """Take one optimiser step on `batch`; return its mean assistant-token loss."""
        start = time.perf_counter()
        tensors = collate(batch, self.pad_id, self.device)
        self.model.train()
        loss = self.model(**tensors).loss
        loss.backward()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        self.train_seconds += time.perf_counter() - start
        self.steps += 1
        self.tokens_seen += int(tensors["attention_mask"].sum())
        self.losses.append(value)
        return value

    def recent_loss(self, steps: int = 20) -> float:
        """Return the mean training loss of the last `steps` steps.

        One batch's loss is noisy; a run reports this mean as its training loss.
        """
        recent = self.losses[-steps:]
        return sum(recent) / len(recent) if recent else float("nan")

    def tokens_per_s(self) -> float:
        """Return the tokens per second of the optimiser steps so far."""
        return self.tokens_seen / self.train_seconds if self.train_seconds else 0.0


@torch.no_grad()
def mean_loss(
    model: torch.nn.Module,
    examples: Iterable[Example],
    batch_size: int,
    pad_id: int,
    device: str,
) -> float:
    """Return the loss per assistant token of `model` over `examples`."""
    was_training = model.training
    model.eval()
    examples = sorted(examples, key=lambda e: len(e["input_ids"]))
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        tensors = collate(examples[start : start + batch_size], pad_id, device)
        count = trained_tokens(tensors)
        if count:
            # The model's loss is a mean over the batch's trained tokens: weight it.
            total += float(model(**tensors).loss) * count
            tokens += count
    model.train(was_training)
    return total / tokens if tokens else float("nan")


def reset_peak_memory(device: str) -> None:
    """Start counting peak accelerator memory from now (a no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: str) -> float:
    """Return peak GPU memory on CUDA, else the peak resident memory of this process."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
