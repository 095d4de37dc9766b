"""Score a causal language model on chats: answer NLL, greedy answers, answer metrics.

Every chat ends with the assistant's reference answer. `answer_nll` scores that answer
under the model; `generate_answers` lets the model write its own answer to the turns
before it; `generation_metrics` compares written answers with the references.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from driftloop.errors import ConfigError
from tasks.descriptors import REFUSAL_PHRASES
from tasks.filters import normalise

Chat = list[dict[str, str]]

_CHAT_FIX = (
    "Pass each chat as a list of {'role': ..., 'content': ...} messages whose last one "
    "is the assistant's reference answer, with at least one turn before it."
)


def answer_nll(
    model: Any,
    tokenizer: Any,
    chats: Sequence[Chat],
    max_length: int = 512,
    batch_size: int = 8,
) -> np.ndarray:
    """Return each chat's mean negative log-likelihood per answer token, in nats.

    The answer is the final assistant turn as the chat template renders it, up to and
    including the end-of-sequence token. A context too long for `max_length` loses its
    oldest tokens; the answer is always scored whole.
    """
    _check_positive("batch_size", batch_size)
    _check_positive("max_length", max_length)
    examples = [
        _answer_example(tokenizer, chat, index, max_length)
        for index, chat in enumerate(chats)
    ]
    pad = _pad_id(tokenizer)
    device = _device(model)

    out = np.empty(len(examples), dtype=np.float64)
    lengths = [len(ids) for ids, _ in examples]
    with _evaluating(model), torch.no_grad():
        for batch in _length_batches(lengths, batch_size):
            # Right padding keeps every real token at positions 0..len-1, so no model
            # needs position ids rebuilt from the mask to score it.
            ids, mask = _pad([examples[i][0] for i in batch], pad, left=False)
            logits = model(
                input_ids=ids.to(device), attention_mask=mask.to(device)
            ).logits
            for row, index in enumerate(batch):
                length, answer = lengths[index], examples[index][1]
                # The logit at position t predicts token t + 1.
                predicted = logits[row, length - answer - 1 : length - 1].float()
                targets = ids[row, length - answer : length].to(logits.device)
                out[index] = F.cross_entropy(predicted, targets).item()
    return out


def perplexity(nll: np.ndarray) -> float:
    """Return the perplexity of per-example NLLs: exp of their mean."""
    return float(np.exp(np.mean(nll)))


def generate_answers(
    model: Any,
    tokenizer: Any,
    chats: Sequence[Chat],
    max_new_tokens: int = 128,
    batch_size: int = 8,
) -> list[str]:
    """Return the model's greedy answer to each chat's turns before its reference."""
    _check_positive("batch_size", batch_size)
    _check_positive("max_new_tokens", max_new_tokens)
    prompts = []
    for index, chat in enumerate(chats):
        _check_chat(chat, index)
        prompts.append(_encode(tokenizer, _render_prompt(tokenizer, chat[:-1])))
    pad = _pad_id(tokenizer)
    stops = _stop_ids(model, tokenizer)
    device = _device(model)

    answers = [""] * len(prompts)
    with _evaluating(model), torch.no_grad():
        for batch in _length_batches([len(p) for p in prompts], batch_size):
            # Left padding: every prompt ends where generation starts.
            ids, mask = _pad([prompts[i] for i in batch], pad, left=True)
            output = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                # The model's own sampling defaults mean nothing to greedy decoding.
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad,
                # With no end token anywhere, answers run to max_new_tokens.
                eos_token_id=sorted(stops) or None,
            )
            for row, index in enumerate(batch):
                new = _until_stop(output[row, ids.shape[1] :].tolist(), stops)
                answers[index] = tokenizer.decode(new, skip_special_tokens=True).strip()
    return answers


def generation_metrics(
    predictions: Sequence[str], references: Sequence[str], embedder: Any
) -> dict[str, np.ndarray]:
    """Return per-example similarity, refusal, length ratio and exact match."""
    if len(predictions) != len(references):
        raise ConfigError(
            f"generation_metrics got {len(predictions)} predictions and "
            f"{len(references)} references; expected one prediction per reference. "
            "Pass both lists in the same order, one entry per chat."
        )
    if not predictions:
        empty = np.empty(0, dtype=np.float64)
        return {
            key: empty.copy()
            for key in ("similarity", "refusal", "length_ratio", "exact_match")
        }

    predicted = np.asarray(embedder.encode(list(predictions)), dtype=np.float64)
    expected = np.asarray(embedder.encode(list(references)), dtype=np.float64)
    normal_predictions = [normalise(text) for text in predictions]
    return {
        # Rows are unit length, so the dot product is the cosine.
        "similarity": np.einsum("ij,ij->i", predicted, expected),
        "refusal": np.array(
            [
                float(any(phrase in text for phrase in REFUSAL_PHRASES))
                for text in normal_predictions
            ]
        ),
        "length_ratio": np.array(
            [
                len(p) / max(len(r), 1)
                for p, r in zip(predictions, references, strict=True)
            ],
            dtype=np.float64,
        ),
        "exact_match": np.array(
            [
                float(p == normalise(r))
                for p, r in zip(normal_predictions, references, strict=True)
            ]
        ),
    }


def _answer_example(
    tokenizer: Any, chat: Chat, index: int, max_length: int
) -> tuple[list[int], int]:
    """Return the (truncated) token ids of a chat and how many end it as the answer."""
    _check_chat(chat, index)
    prompt = _encode(tokenizer, _render_prompt(tokenizer, chat[:-1]))
    full = _encode(tokenizer, tokenizer.apply_chat_template(chat, tokenize=False))

    # Where prompt and full chat part ways the answer starts; a token merged across
    # that boundary counts as answer, so the answer is never cut short.
    shared = _common_prefix(prompt, full)
    context, answer = full[:shared], full[shared:]
    eos = tokenizer.eos_token_id
    if eos is not None:
        # Templates often add a newline after the end-of-turn token: not the answer's.
        if eos in answer:
            answer = answer[: len(answer) - answer[::-1].index(eos)]
        else:
            answer = [*answer, eos]
    if not context or not answer:
        raise ConfigError(
            f"chats[{index}] renders with {len(context)} context and {len(answer)} "
            "answer tokens through this tokenizer's chat template; expected at least "
            f"one of each. Check the template renders every turn. {_CHAT_FIX}"
        )
    room = max_length - len(answer)
    if room < 1:
        raise ConfigError(
            f"chats[{index}] has a {len(answer)}-token answer, which leaves no room "
            f"for context within max_length={max_length}; expected an answer shorter "
            f"than max_length. Raise max_length above {len(answer)} or drop the chat."
        )
    return context[-room:] + answer, len(answer)


def _render_prompt(tokenizer: Any, messages: Chat) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The template already placed every special token it wants.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    for position, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return position
    return min(len(a), len(b))


def _check_chat(chat: Any, index: int) -> None:
    ok = (
        isinstance(chat, list)
        and len(chat) >= 2
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in chat)
    )
    if not ok:
        raise ConfigError(
            f"chats[{index}] is not a chat with a reference answer: got "
            f"{type(chat).__name__} of length {_length(chat)}. {_CHAT_FIX}"
        )
    if chat[-1]["role"] != "assistant":
        raise ConfigError(
            f"chats[{index}] ends with a {chat[-1]['role']!r} turn, expected the "
            f"'assistant' reference answer last. {_CHAT_FIX}"
        )


def _length(value: Any) -> int | str:
    return len(value) if hasattr(value, "__len__") else "unknown"


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} is {value!r}, expected a whole number of 1 or more.")


def _pad_id(tokenizer: Any) -> int:
    # Padding is masked out, so any id does; the pad token when there is one.
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """Return every token id that ends an answer: the tokenizer's and the model's."""
    stops = set()
    config = getattr(model, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        if isinstance(value, int):
            stops.add(value)
        elif value is not None:
            stops.update(int(v) for v in value)
    return stops


def _until_stop(tokens: list[int], stops: set[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position]
    return tokens


def _device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    return device if device is not None else next(model.parameters()).device


def _length_batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Yield indices in batches of similar length, so each batch pads little."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _pad(
    sequences: list[list[int]], pad: int, left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        ids[row, span] = torch.tensor(sequence, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


@contextmanager
def _evaluating(model: Any) -> Iterator[None]:
    """Put the model in eval mode for the block, then back as it was."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)
