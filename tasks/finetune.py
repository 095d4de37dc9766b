"""Fine-tune a LoRA adapter on curated chats, in a child process with a time limit.

    python -m tasks.finetune work/spec.json     # what run_training starts

The spec names the base model, the train and validation chat JSONL files, the output
folder and the settings; each step's figures go to metrics.jsonl beside the spec and
the final figures to result.json.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop.errors import ConfigError, DriftloopError
from driftloop.progress import progress
from tasks.lm import encode_chat, load_model, pick_device
from tasks.training import (
    StepCallback,
    Trainer,
    mean_loss,
    peak_memory_mb,
    reset_peak_memory,
    seed_everything,
    step_batches,
    total_steps,
    warmup_cosine,
)

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
_STDERR_TAIL_LINES = 20
# How often the parent looks at the child and at the steps it streamed, in seconds.
_POLL_S = 0.5
_TIMEOUT_FIX = (
    "Raise DRIFTLOOP_FINETUNE_TIMEOUT_S (FinetuneSettings.timeout_s) if the run was "
    "healthy, or train on less: fewer epochs, a smaller max_length or max_steps."
)


class TrainingFailed(DriftloopError):
    """A fine-tuning run crashed or ran past its wall-clock limit."""


class FinetuneSettings(BaseSettings):
    """How a LoRA adapter is trained; defaults suit the small base model on a CPU."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_FINETUNE_", extra="ignore")

    rank: int = Field(8, ge=1, le=512, description="LoRA rank r of each adapter.")
    alpha: float = Field(
        16, gt=0, description="LoRA alpha; updates are scaled by alpha / rank."
    )
    dropout: float = Field(
        0.05, ge=0, lt=1, description="Dropout on the LoRA input during training."
    )
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description='Module names that get adapters, as JSON: ["q_proj", "v_proj"].',
    )
    learning_rate: float = Field(
        2e-3, gt=0, le=1, description="Peak AdamW learning rate of the adapters."
    )
    epochs: int = Field(3, ge=1, description="Passes over the train chats.")
    batch_size: int = Field(8, ge=1, description="Chats per optimiser step.")
    max_length: int = Field(
        512,
        ge=32,
        description="Longest chat in tokens; longer chats lose their oldest turns.",
    )
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimiser steps; unset: no cap."
    )
    eval_every: int = Field(
        50,
        ge=1,
        description="Steps between validation losses (one is also at the end).",
    )
    save_every: int = Field(
        200, ge=1, description="Steps between adapter checkpoints in checkpoints/."
    )
    seed: int = Field(
        0, ge=0, description="Seed of the adapter weights and chat order."
    )
    device: str = Field(
        "auto",
        description="Torch device: auto (CUDA, else MPS, else CPU), cpu, cuda, mps.",
    )
    timeout_s: float = Field(
        3600,
        gt=0,
        description="Wall-clock limit in seconds of the training child process.",
    )


def train_adapter(
    base: str,
    train: list[list[dict]],
    validation: list[list[dict]],
    out_dir: Path,
    settings: FinetuneSettings | None = None,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter on `train`, save it in out_dir/adapter, return figures."""
    settings = settings or FinetuneSettings()
    for name, chats in (("train", train), ("validation", validation)):
        if not chats:
            raise ConfigError(
                f"Fine-tuning got no {name} chats; expected at least one chat ending "
                f"with an assistant answer. Curate a dataset version with a {name} "
                "split first."
            )
    started = time.perf_counter()
    on_step = on_step or (lambda _: None)
    device = pick_device(settings.device)
    reset_peak_memory(device)
    model, tokenizer = load_model(base, device)
    seed_everything(settings.seed)
    model = add_adapters(model, settings)
    train_examples, validation_examples = (
        [encode_chat(tokenizer, chat, settings.max_length) for chat in chats]
        for chats in (train, validation)
    )

    def validate(step: int) -> float:
        loss = mean_loss(
            model,
            validation_examples,
            settings.batch_size,
            tokenizer.pad_token_id,
            device,
        )
        on_step({"step": step, "validation_loss": loss})
        return loss

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0)
    total = total_steps(
        len(train_examples), settings.batch_size, settings.epochs, settings.max_steps
    )
    trainer = Trainer(
        model,
        optimizer,
        warmup_cosine(optimizer, total),
        tokenizer.pad_token_id,
        device,
    )
    batches = step_batches(train_examples, settings.batch_size, settings.seed, total)
    validation_loss = float("nan")
    # The first line tells a parent following the stream how long the bar is.
    on_step({"step": 0, "total_steps": total})
    with progress("Fine-tuning the adapter", total) as bar:
        for batch in batches:
            loss = trainer.step(batch)
            step = trainer.steps
            on_step({"step": step, "train_loss": loss, "tokens": trainer.tokens_seen})
            if step % settings.eval_every == 0 or step == total:
                validation_loss = validate(step)
            if step % settings.save_every == 0 and step < total:
                checkpoint = out_dir / "checkpoints" / f"step-{step}"
                model.save_pretrained(checkpoint, safe_serialization=True)
            bar.advance(1)

    model.save_pretrained(out_dir / "adapter", safe_serialization=True)
    tokenizer.save_pretrained(out_dir / "adapter")
    result = {
        "train_loss": trainer.recent_loss(),
        "validation_loss": validation_loss,
        "steps": trainer.steps,
        "tokens_seen": trainer.tokens_seen,
        "seconds": time.perf_counter() - started,
        "tokens_per_s": trainer.tokens_per_s(),
        "peak_memory_mb": peak_memory_mb(device),
        "device": device,
        "trainable_parameters": sum(p.numel() for p in trainable),
    }
    log.info(
        "adapter trained base=%s out=%s steps=%d train_loss=%.4f validation_loss=%.4f",
        base,
        out_dir,
        trainer.steps,
        result["train_loss"],
        validation_loss,
    )
    return result


def add_adapters(model: torch.nn.Module, settings: FinetuneSettings) -> PeftModel:
    """Wrap `model` with fresh LoRA adapters as `settings` say; freeze the rest."""
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(
            f"DRIFTLOOP_FINETUNE_TARGET_MODULES={settings.target_modules} does not fit "
            f"the base model: {exc}. Name linear layers the model has, such as q_proj "
            "and v_proj for Llama-style models."
        ) from exc


def load_adapter(
    base: str, adapter_dir: Path, device: str = "auto"
) -> tuple[PeftModel, Any]:
    """Load `base` with the adapter in `adapter_dir` on top, ready for generation."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        found = sorted(p.name for p in adapter_dir.glob("adapter_model.*"))
        why = (
            f"holds {', '.join(found)}, pickle weights, which driftloop refuses since "
            "loading them can run arbitrary code"
            if found
            else "is not an adapter folder"
        )
        raise ConfigError(
            f"Adapter folder {adapter_dir} {why}; expected {ADAPTER_WEIGHTS} and "
            "adapter_config.json as train_adapter writes them. Retrain the adapter, or "
            "load it once where you trust it and save it with "
            "save_pretrained(folder, safe_serialization=True)."
        )
    model, tokenizer = load_model(base, device)
    try:
        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
    # A mismatched adapter fails deep inside PEFT; the pairing is what to fix.
    except Exception as exc:
        raise ConfigError(
            f"Adapter {adapter_dir} does not fit base model {base!r}: {exc}. Load it "
            "on the base model it was trained on."
        ) from exc
    model.eval()
    return model, tokenizer


def read_chats(path: Path) -> list[list[dict]]:
    """Read a chat JSONL file: one {"messages": [...]} object per line."""
    chats = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                messages = json.loads(line)["messages"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{path}:{number} is not a chat line ({exc}); expected JSON like "
                    '{"messages": [{"role": "user", "content": "..."}, ...]} as '
                    "curation writes it. Fix or drop that line."
                ) from exc
            chats.append(messages)
    return chats


def run_training(spec: dict[str, Any], work_dir: Path, timeout_s: float) -> dict:
    """Run train_adapter on `spec` in a child process killed after `timeout_s`."""
    if timeout_s <= 0:
        raise ConfigError(
            f"timeout_s={timeout_s} for fine-tuning; expected seconds above 0. Set "
            "DRIFTLOOP_FINETUNE_TIMEOUT_S."
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    spec_path = work_dir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2, default=str))
    metrics_path, result_path = work_dir / "metrics.jsonl", work_dir / "result.json"
    stderr_path = work_dir / "stderr.log"
    for stale in (metrics_path, result_path):
        stale.unlink(missing_ok=True)

    # The child imports tasks.finetune from this checkout wherever it is started from.
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "tasks.finetune", str(spec_path)]
    with open(stderr_path, "wb") as stderr:
        # A session of its own, so a kill reaches the child's own children too.
        child = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
        try:
            status = _follow(child, metrics_path, timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise TrainingFailed(
                f"Fine-tuning of {spec.get('base')!r} ran past its wall-clock limit "
                f"of {timeout_s:g} s and was killed; steps so far are in "
                f"{metrics_path}. {_TIMEOUT_FIX}"
            ) from None

    if status != 0:
        raise TrainingFailed(
            f"Fine-tuning of {spec.get('base')!r} failed: the child process exited "
            f"with status {status}. Fix what its stderr says and run again; the last "
            f"lines of {stderr_path}:\n{_tail(stderr_path)}"
        )
    result = json.loads(result_path.read_text())
    return {**result, "metrics": _read_metrics(metrics_path)}


def _follow(child: subprocess.Popen, metrics_path: Path, timeout_s: float) -> int:
    """Wait for the child, showing its steps as a bar; TimeoutExpired past the limit.

    The child's own bar would draw into a log file, so the parent draws one here (and
    the Prefect progress artifact) from the step lines the child streams.
    """
    deadline = time.monotonic() + timeout_s
    with contextlib.ExitStack() as stack:
        bar, offset = None, 0
        while True:
            try:
                status = child.wait(timeout=min(_POLL_S, timeout_s))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise
                status = None
            offset, rows = _new_rows(metrics_path, offset)
            for row in rows:
                if "total_steps" in row and bar is None:
                    bar = stack.enter_context(
                        progress("Fine-tuning the adapter", int(row["total_steps"]))
                    )
                elif "train_loss" in row and bar is not None:
                    bar.advance(1)
            if status is not None:
                return status


def _new_rows(path: Path, offset: int) -> tuple[int, list[dict]]:
    """Complete JSON lines written to `path` after byte `offset`, and the new offset."""
    if not path.is_file():
        return offset, []
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read()
    complete = data[: data.rfind(b"\n") + 1]  # a half-written last line waits
    rows = [json.loads(line) for line in complete.splitlines() if line.strip()]
    return offset + len(complete), rows


def _tail(path: Path, lines: int = _STDERR_TAIL_LINES) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines)).rstrip()


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _main(spec_path: Path) -> None:
    """Train as `spec_path` says, streaming step figures next to it."""
    spec = json.loads(spec_path.read_text())
    work_dir = spec_path.parent
    settings = FinetuneSettings(**spec.get("settings", {}))
    train = read_chats(Path(spec["train_path"]))
    validation = read_chats(Path(spec["validation_path"]))
    with open(work_dir / "metrics.jsonl", "a", encoding="utf-8") as metrics:

        def on_step(figures: dict[str, Any]) -> None:
            # One flushed line per step: the parent reads what there is after a kill.
            metrics.write(json.dumps(figures) + "\n")
            metrics.flush()

        result = train_adapter(
            spec["base"], train, validation, Path(spec["out_dir"]), settings, on_step
        )
    partial = work_dir / "result.json.partial"
    partial.write_text(json.dumps(result, indent=2))
    partial.replace(work_dir / "result.json")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    try:
        _main(Path(sys.argv[1]))
    except DriftloopError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)
