"""Training speed and memory: LoRA against full fine-tuning, and pretraining.

    python -m bench finetune
    python -m bench.finetune            # the same rows, printed as JSON
    BENCH_FINETUNE_STEPS=5 BENCH_FINETUNE_CHATS=200 python -m bench.finetune

Cases, each in a fresh process on the same simulated support chats and batches:

- pretrain: the default base (BaseModelSettings) from a random start, every weight
  trained, for STEPS steps. Its weights are the base of the next two cases.
- lora: `train_adapter` with the default FinetuneSettings for STEPS steps.
- full: the baseline, every weight of the same base trained with the same loop,
  batches and AdamW for STEPS steps: what fine-tuning without adapters costs.

Tokens/s counts the chat tokens of the optimiser steps (no padding, no evaluation).
On CPU, peak memory is the process's peak resident memory, and `training_mb` what
training added to the peak after imports, model and chats were loaded; on CUDA it is
torch's peak allocated memory. With CUDA present every case runs on the GPU too.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from bench import run_isolated

STEPS = int(os.environ.get("BENCH_FINETUNE_STEPS", "20"))
CHATS = int(os.environ.get("BENCH_FINETUNE_CHATS", "400"))
CASES = ("pretrain", "lora", "full")


def run() -> list[dict]:
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    work = Path(tempfile.mkdtemp(prefix="driftloop-bench-finetune-"))
    try:
        return [_measure(case, device, work) for device in devices for case in CASES]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(case: str, device: str, work: Path) -> dict:
    result, peak_rss_mb = run_isolated("bench.finetune", case, device, str(work))
    return {
        "what": case,
        "device": device,
        "steps": result["steps"],
        "batch_size": result["batch_size"],
        "tokens_per_s": result["tokens_per_s"],
        "seconds": round(result["seconds"], 2),
        "peak_memory_mb": result["peak_memory_mb"],
        "training_mb": result.get("training_mb", ""),
        "trainable_parameters": result["trainable_parameters"],
        "peak_rss_mb": peak_rss_mb,
    }


def _chats(count: int = CHATS) -> list[list[dict]]:
    """Return `count` simulated support chats, each ending with the answer."""
    from tasks.simulate import SimulationConfig, iter_interactions

    config = SimulationConfig(
        days=1, per_day=2 * count, seed=3, start=date(2026, 11, 1), malformed=False
    )
    chats = [
        [dict(m) for m in r["messages"]]
        + [{"role": "assistant", "content": r["response"]}]
        for r in iter_interactions(config)
        if "response" in r
    ]
    return chats[:count]


def _pretrain(device: str, work: Path) -> dict:
    from tasks.lm import BaseModelSettings, pretrain

    settings = BaseModelSettings(max_steps=STEPS, device=device)
    result = pretrain(_chats(), work / f"base-{device}", settings)
    return {
        **result,
        "peak_memory_mb": _peak(device),
        "trainable_parameters": result["parameters"],
        "batch_size": settings.batch_size,
    }


def _lora(device: str, work: Path) -> dict:
    from tasks.finetune import FinetuneSettings, train_adapter

    chats, ready = _ready(device, work)
    settings = FinetuneSettings(
        max_steps=STEPS, eval_every=10**9, save_every=10**9, device=device
    )
    result = train_adapter(
        str(work / "base-cpu"), chats, chats[:8], work / f"lora-{device}", settings
    )
    training_mb = _peak(device) - ready
    return {**result, "training_mb": training_mb, "batch_size": settings.batch_size}


def _full(device: str, work: Path) -> dict:
    import torch

    from tasks.finetune import FinetuneSettings
    from tasks.lm import encode_chat, load_model
    from tasks.training import (
        Trainer,
        peak_memory_mb,
        reset_peak_memory,
        seed_everything,
        step_batches,
        warmup_cosine,
    )

    chats, ready = _ready(device, work)
    settings = FinetuneSettings(device=device)
    start = time.perf_counter()
    reset_peak_memory(device)
    model, tokenizer = load_model(str(work / "base-cpu"), device)
    seed_everything(settings.seed)
    examples = [encode_chat(tokenizer, chat, settings.max_length) for chat in chats]
    # A full fine-tune wants a far smaller rate than adapters do; speed is the same.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    trainer = Trainer(
        model,
        optimizer,
        warmup_cosine(optimizer, STEPS),
        tokenizer.pad_token_id,
        device,
    )
    for batch in step_batches(examples, settings.batch_size, settings.seed, STEPS):
        trainer.step(batch)
    return {
        "steps": trainer.steps,
        "batch_size": settings.batch_size,
        "tokens_per_s": trainer.tokens_per_s(),
        "seconds": time.perf_counter() - start,
        "peak_memory_mb": peak_memory_mb(device),
        "training_mb": _peak(device) - ready,
        "trainable_parameters": model.num_parameters(),
    }


def _ready(device: str, work: Path) -> tuple[list[list[dict]], float]:
    """Load what training needs, once, and return the chats and the peak so far."""
    from tasks.lm import load_model

    chats = _chats()
    model, _ = load_model(str(work / "base-cpu"), device)
    del model
    return chats, _peak(device)


def _peak(device: str) -> float:
    from tasks.training import peak_memory_mb

    return peak_memory_mb(device)


if __name__ == "__main__":
    if len(sys.argv) == 1:
        print(json.dumps(run(), indent=2))
        sys.exit()
    case, device, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    cases = {"pretrain": _pretrain, "lora": _lora, "full": _full}
    print(json.dumps(cases[case](device, work)))
