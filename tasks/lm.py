"""The base model: a small byte-level Llama trained offline, or any other loaded."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import random
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    ByT5Tokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from driftloop.errors import ConfigError
from driftloop.progress import progress
from tasks.training import (
    IGNORE,
    Example,
    StepCallback,
    Trainer,
    seed_everything,
    step_batches,
    total_steps,
    warmup_cosine,
)

log = logging.getLogger(__name__)

# Each turn opens with its role on a line of its own; an assistant turn ends with the
# tokenizer's eos, so generation knows where an answer stops.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] -}}"
    "{%- if message['role'] == 'assistant' -%}{{- eos_token -}}"
    "{%- else -%}{{- '\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)
ROLES = ("system", "user", "assistant")
_PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
_FIX = (
    "Give a local folder written by driftloop's pretraining or by save_pretrained, or "
    "a Hugging Face id already in the local cache (downloads are off)."
)


def make_tokenizer() -> PreTrainedTokenizerBase:
    """Return a byte-level tokenizer that needs no files, with the chat template set."""
    tokenizer = ByT5Tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


class BaseModelSettings(BaseSettings):
    """Shape and pretraining of the small base model; defaults fit 2 CPU cores."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_BASE_", extra="ignore")

    hidden_size: int = Field(256, ge=8, description="Width of the hidden states.")
    layers: int = Field(4, ge=1, le=64, description="Number of decoder layers.")
    heads: int = Field(
        4, ge=1, description="Attention heads per layer; must divide hidden_size."
    )
    intermediate_size: int = Field(
        688, ge=8, description="Width of each layer's feed-forward block."
    )
    max_length: int = Field(
        512,
        ge=32,
        description="Longest chat in tokens (bytes); longer chats lose their oldest "
        "turns first.",
    )
    epochs: int = Field(1, ge=1, description="Passes over the pretraining chats.")
    learning_rate: float = Field(
        3e-3, gt=0, le=1, description="Peak AdamW learning rate, after warmup."
    )
    batch_size: int = Field(8, ge=1, description="Chats per optimiser step.")
    seed: int = Field(
        0, ge=0, description="Seed of the initial weights and the chat order."
    )
    max_examples: int = Field(
        2000,
        ge=1,
        description="Most chats pretrained on; a seeded sample is drawn from more.",
    )
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimiser steps; unset: no cap."
    )
    device: str = Field(
        "auto",
        description="Torch device: auto (CUDA, else MPS, else CPU), cpu, cuda, mps.",
    )


def build_base(
    settings: BaseModelSettings,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return a freshly initialised, seeded Llama and the tokenizer it reads."""
    if settings.hidden_size % settings.heads:
        raise ConfigError(
            f"DRIFTLOOP_BASE_HEADS={settings.heads} does not divide "
            f"DRIFTLOOP_BASE_HIDDEN_SIZE={settings.hidden_size}: pick heads that "
            "divide the hidden size, for example 4 for 256."
        )
    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        num_key_value_heads=settings.heads,
        max_position_embeddings=settings.max_length,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    seed_everything(settings.seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def encode_chat(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], max_length: int
) -> Example:
    """Tokenize a chat with labels on assistant answers only, within `max_length`."""
    _check_messages(messages)
    ids: list[int] = []
    labels: list[int] = []
    final_start = 0
    for text, is_answer, opens_turn in _segments(tokenizer, messages):
        if opens_turn:
            final_start = len(ids)
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if is_answer else [IGNORE] * len(piece)

    if len(ids) - final_start > max_length:
        # The answer is what is learned: keep its start and drop its tail.
        keep = slice(final_start, final_start + max_length)
    else:
        keep = slice(max(0, len(ids) - max_length), len(ids))
    ids, labels = ids[keep], labels[keep]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def _check_messages(messages: list[dict]) -> None:
    if not isinstance(messages, list) or not messages:
        raise ConfigError(
            f"A chat must be a non-empty list of messages, got {messages!r:.80}: "
            "drop empty chats before training."
        )
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise ConfigError(
                f"Message {index} of a chat is {message!r:.120}; expected a dict with "
                f"role in {ROLES} and string content. Fix or drop that chat."
            )
    if messages[-1]["role"] != "assistant":
        raise ConfigError(
            f"A chat ends with a {messages[-1]['role']} message; training needs the "
            "last message to be the assistant answer. Drop the trailing turns."
        )


def _segments(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict]
) -> list[tuple[str, bool, bool]]:
    """Cut the rendered chat into (text, is an answer, opens an assistant turn).

    Each message's text is what rendering one more message adds, so this works with
    any template that renders a chat as an extension of its prefixes.
    """
    done = ""
    pieces = []
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            header = _render(tokenizer, messages[:index], generation_prompt=True)
            full = _render(tokenizer, messages[: index + 1], generation_prompt=False)
            _check_prefix(tokenizer, done, header)
            _check_prefix(tokenizer, header, full)
            pieces += [
                (header[len(done) :], False, True),
                (full[len(header) :], True, False),
            ]
        else:
            full = _render(tokenizer, messages[: index + 1], generation_prompt=False)
            _check_prefix(tokenizer, done, full)
            pieces.append((full[len(done) :], False, False))
        done = full
    return pieces


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation_prompt: bool
) -> str:
    if not messages and not generation_prompt:
        return ""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def _check_prefix(tokenizer: PreTrainedTokenizerBase, prefix: str, text: str) -> None:
    if not text.startswith(prefix):
        raise ConfigError(
            f"The chat template of {type(tokenizer).__name__} renders a chat so that "
            "it does not extend the rendering of its first turns, so answers cannot "
            "be told apart from prompts. Use a base model whose template does, or "
            "driftloop's own (tasks.lm.CHAT_TEMPLATE)."
        )


def pretrain(
    chats: list[list[dict]],
    out_dir: Path,
    settings: BaseModelSettings | None = None,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Train every weight of a fresh base model on `chats`; save it to `out_dir`."""
    settings = settings or BaseModelSettings()
    if not chats:
        raise ConfigError(
            "Pretraining got no chats; expected at least one chat ending with an "
            "assistant answer. Simulate or curate some first."
        )
    started = time.perf_counter()
    rng = random.Random(settings.seed)
    if len(chats) > settings.max_examples:
        chats = rng.sample(chats, settings.max_examples)
    device = pick_device(settings.device)
    model, tokenizer = build_base(settings)
    model.to(device)
    examples = [encode_chat(tokenizer, chat, settings.max_length) for chat in chats]

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=0.01
    )
    total = total_steps(
        len(examples), settings.batch_size, settings.epochs, settings.max_steps
    )
    trainer = Trainer(
        model,
        optimizer,
        warmup_cosine(optimizer, total),
        tokenizer.pad_token_id,
        device,
    )
    log.info(
        "base pretraining chats=%d steps=%d device=%s parameters=%d",
        len(examples),
        total,
        device,
        model.num_parameters(),
    )
    batches = step_batches(examples, settings.batch_size, settings.seed, total)
    with progress("Pretraining the base model", total) as bar:
        for batch in batches:
            loss = trainer.step(batch)
            if on_step is not None:
                on_step({"step": trainer.steps, "loss": loss})
            bar.advance(1)

    save_model(model, tokenizer, out_dir)
    result = {
        "loss": trainer.recent_loss(),
        "steps": trainer.steps,
        "tokens_seen": trainer.tokens_seen,
        "seconds": time.perf_counter() - started,
        "tokens_per_s": trainer.tokens_per_s(),
        "parameters": model.num_parameters(),
        "device": device,
    }
    log.info("base pretrained out=%s %s", out_dir, _facts(result))
    return result


def save_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path
) -> None:
    """Write model and tokenizer as safetensors and JSON, chat template included."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _facts(result: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in result.items()
    )


def pick_device(requested: str = "auto") -> str:
    """Return `requested`, or for auto the best device here: CUDA, MPS, then CPU."""
    mps = torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    kind = requested.split(":", 1)[0]
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps}
    if kind not in available:
        raise ConfigError(
            f"Device {requested!r} is not one of auto, cpu, cuda, cuda:N, mps: set the "
            "device setting to one of them."
        )
    if not available[kind]:
        raise ConfigError(
            f"Device {requested!r} was asked for but this machine has none: set the "
            "device setting to auto or cpu."
        )
    return requested


def load_model(
    path_or_id: str, device: str = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a folder or the local HF cache."""
    folder = resolve_model_folder(path_or_id)
    device = pick_device(device)
    # Half precision is for accelerators; CPU kernels are fastest and exact in fp32.
    dtype = "auto" if device.startswith("cuda") else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, use_safetensors=True, local_files_only=True, dtype=dtype
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    # Loading runs the model's own code paths; whatever fails, the folder is at fault.
    except Exception as exc:
        raise ConfigError(
            f"Base model {path_or_id!r} at {folder} cannot be loaded as a causal "
            f"language model: {exc}. {_FIX}"
        ) from exc
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    log.info("base model loaded from=%s device=%s", folder, device)
    return model.to(device), tokenizer


def resolve_model_folder(path_or_id: str) -> Path:
    """Find the local folder of a model and check it holds safetensors weights."""
    path = Path(path_or_id).expanduser()
    folder = path if path.is_dir() else _hugging_face_cache(path_or_id)
    if folder is None:
        raise ConfigError(
            f"Base model {path_or_id!r} is neither a local folder nor in the Hugging "
            f"Face cache. {_FIX}"
        )
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"Base model folder {folder} has no config.json, so it is not a saved "
            f"model. {_FIX}"
        )
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(
            p.name for pattern in _PICKLE_PATTERNS for p in folder.glob(pattern)
        )
        if pickled:
            raise ConfigError(
                f"Base model folder {folder} holds only pickle weights "
                f"({', '.join(pickled)}); driftloop refuses pickle, since loading it "
                "can run arbitrary code. Convert it once where you trust the file: "
                "AutoModelForCausalLM.from_pretrained(folder, use_safetensors=False)"
                ".save_pretrained(folder, safe_serialization=True)."
            )
        raise ConfigError(
            f"Base model folder {folder} has no model weights (*.safetensors). {_FIX}"
        )
    return folder


def _hugging_face_cache(name: str) -> Path | None:
    """Return the cached snapshot folder of a Hugging Face model id, if any."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import snapshot_download

    # Any failure here (a malformed id, a missing snapshot) means "not cached".
    with contextlib.suppress(Exception):
        return Path(snapshot_download(name, local_files_only=True))
    return None
