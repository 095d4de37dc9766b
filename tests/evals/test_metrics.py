"""Answer NLL, greedy answers and answer metrics, on a real tiny Llama and MiniLM."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

from driftloop.errors import ConfigError
from evals.metrics import answer_nll, generate_answers, generation_metrics, perplexity
from tasks.embeddings import Embedder

TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}"
    "{% if m.role == 'assistant' %}</s>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
QUESTIONS = [
    "hi",
    "where is my parcel?",
    "can I pay later?",
    "please reset my password, I am locked out",
    "how are you",
    "do you ship to Canada?",
    "refund",
    "what does the premium plan cost per month?",
]

ANSWERS = ["ok.", "no", "yes please", "ok.", "no", "yes please", "ok.", "no"]


def chat(question: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


@pytest.fixture(scope="module")
def tokenizer() -> ByT5Tokenizer:
    tok = ByT5Tokenizer()
    tok.chat_template = TEMPLATE
    return tok


def tiny_llama(tokenizer: ByT5Tokenizer, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def prompt_and_answer(
    tokenizer: ByT5Tokenizer, question: str, answer: str
) -> tuple[list[int], list[int]]:
    """The template's prompt bytes and the answer bytes plus eos, written out by hand."""
    prompt = f"<|user|>\n{question}<|assistant|>\n"
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt, add_special_tokens=False)["input_ids"], [
        *answer_ids,
        tokenizer.eos_token_id,
    ]


def hand_nll(model: LlamaForCausalLM, context: list[int], answer: list[int]) -> float:
    """Mean -log p(answer token | everything before it), from one unpadded forward."""
    with torch.no_grad():
        logits = model(torch.tensor([context + answer])).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    start = len(context)
    picked = [logp[start - 1 + k, token].item() for k, token in enumerate(answer)]
    return -sum(picked) / len(picked)


@pytest.fixture(scope="module")
def model(tokenizer: ByT5Tokenizer) -> LlamaForCausalLM:
    return tiny_llama(tokenizer)


@pytest.fixture(scope="module")
def ok_model(tokenizer: ByT5Tokenizer) -> LlamaForCausalLM:
    """A tiny Llama trained for 100 steps to answer every question with "ok."."""
    model = tiny_llama(tokenizer, seed=1)
    rows = [prompt_and_answer(tokenizer, q, "ok.") for q in QUESTIONS]
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (prompt, answer) in enumerate(rows):
        ids[row, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
        labels[row, len(prompt) : len(prompt) + len(answer)] = torch.tensor(answer)
        mask[row, : len(prompt) + len(answer)] = 1

    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    with one_thread():
        for _ in range(100):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    return model


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    return Embedder(cache_dir=Path(tmp_path_factory.mktemp("embeddings")))


class one_thread:
    """Run a tiny model on one thread: on a shared CPU more threads only contend."""

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *_: object) -> None:
        torch.set_num_threads(self.threads)


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    with one_thread():
        yield


class TestAnswerNll:
    def test_the_nll_is_the_mean_negative_log_probability_of_the_answer_and_eos(
        self, model, tokenizer
    ):
        prompt, answer = prompt_and_answer(tokenizer, "where is my parcel?", "ok.")
        nll = answer_nll(model, tokenizer, [chat("where is my parcel?", "ok.")])
        assert nll.shape == (1,)
        assert nll[0] == pytest.approx(hand_nll(model, prompt, answer), abs=1e-4)

    def test_the_nll_does_not_depend_on_batch_size_or_padding(self, model, tokenizer):
        chats = [chat(q, a) for q, a in zip(QUESTIONS, ANSWERS, strict=True)]
        one_by_one = answer_nll(model, tokenizer, chats, batch_size=1)
        batched = answer_nll(model, tokenizer, chats, batch_size=3)
        np.testing.assert_allclose(batched, one_by_one, atol=1e-5)

    def test_a_long_context_loses_its_oldest_tokens_and_keeps_the_answer(
        self, model, tokenizer
    ):
        question = QUESTIONS[3]
        prompt, answer = prompt_and_answer(tokenizer, question, "ok.")
        nll = answer_nll(model, tokenizer, [chat(question, "ok.")], max_length=12)
        kept = prompt[-(12 - len(answer)) :]
        assert nll[0] == pytest.approx(hand_nll(model, kept, answer), abs=1e-4)

    def test_an_answer_longer_than_max_length_is_refused(self, model, tokenizer):
        with pytest.raises(
            ConfigError, match=r"chats\[0\] has a 11-token answer.*max_length=8"
        ):
            answer_nll(model, tokenizer, [chat("hi", "0123456789")], max_length=8)

    def test_a_chat_not_ending_with_the_assistant_is_refused(self, model, tokenizer):
        turns = [{"role": "user", "content": "hi"}]
        with pytest.raises(ConfigError, match=r"chats\[0\] .*expected the .*assistant"):
            answer_nll(model, tokenizer, [[*turns, *turns]])

    def test_a_chat_that_is_not_a_list_of_turns_is_refused(self, model, tokenizer):
        with pytest.raises(ConfigError, match=r"chats\[1\] is not a chat .* got str"):
            answer_nll(model, tokenizer, [chat("hi", "ok."), "hi"])

    def test_a_batch_size_of_zero_is_refused(self, model, tokenizer):
        with pytest.raises(ConfigError, match="batch_size is 0, expected"):
            answer_nll(model, tokenizer, [chat("hi", "ok.")], batch_size=0)

    def test_a_template_that_renders_no_context_is_refused(self, model):
        answers_only = ByT5Tokenizer()
        answers_only.chat_template = (
            "{% for m in messages %}{% if m.role == 'assistant' %}"
            "{{ m.content }}</s>{% endif %}{% endfor %}"
        )
        with pytest.raises(ConfigError, match=r"renders with 0 context and 3 answer"):
            answer_nll(model, answers_only, [chat("hi", "ok")])

    def test_the_model_is_left_in_the_mode_it_came_in(self, model, tokenizer):
        model.train()
        answer_nll(model, tokenizer, [chat("hi", "ok.")])
        assert model.training
        model.eval()

    def test_a_model_trained_to_say_ok_finds_ok_likelier_than_other_answers(
        self, ok_model, tokenizer
    ):
        question = "is the shop open on sunday?"
        answers = ["ok.", "No, it is closed.", "I'm sorry, I can't help with that."]
        nll = answer_nll(ok_model, tokenizer, [chat(question, a) for a in answers])
        assert nll[0] < 0.1
        assert nll[0] < nll[1:].min() - 1.0


class TestPerplexity:
    def test_perplexity_is_the_exponential_of_the_mean_nll(self):
        assert perplexity(np.array([1.0, 3.0])) == pytest.approx(math.exp(2.0))


class TestGenerateAnswers:
    def test_a_model_trained_to_say_ok_answers_ok_in_padded_batches(
        self, ok_model, tokenizer
    ):
        chats = [chat(q, "reference") for q in ("hello there", "is it raining?", "x")]
        answers = generate_answers(
            ok_model, tokenizer, chats, max_new_tokens=8, batch_size=2
        )
        assert answers == ["ok.", "ok.", "ok."]


class TestGenerationMetrics:
    def test_exact_match_ignores_case_and_whitespace_but_not_words(self, embedder):
        metrics = generation_metrics(
            ["  OK.\n", "Reset  it\tNOW", "ok"],
            ["ok.", "reset it now", "ok."],
            embedder,
        )
        np.testing.assert_array_equal(metrics["exact_match"], [1.0, 1.0, 0.0])

    def test_a_refusal_phrase_counts_in_any_case(self, embedder):
        metrics = generation_metrics(
            ["Well, I'M SORRY, I CAN'T do that.", "Sure, here it is."],
            ["Here it is.", "Here it is."],
            embedder,
        )
        np.testing.assert_array_equal(metrics["refusal"], [1.0, 0.0])

    def test_the_length_ratio_divides_by_the_reference_length_or_one(self, embedder):
        metrics = generation_metrics(
            ["abcd", "ab", "abc"], ["ab", "abcd", ""], embedder
        )
        np.testing.assert_allclose(metrics["length_ratio"], [2.0, 0.5, 3.0])

    def test_identical_texts_are_similar_and_unrelated_texts_are_not(self, embedder):
        reference = "Go to the reset page and enter the email on your account."
        metrics = generation_metrics(
            [reference, "Penguins huddle together through the Antarctic winter."],
            [reference, reference],
            embedder,
        )
        assert metrics["similarity"][0] == pytest.approx(1.0, abs=1e-5)
        assert metrics["similarity"][1] < 0.5

    def test_predictions_and_references_of_different_lengths_are_refused(
        self, embedder
    ):
        with pytest.raises(ConfigError, match="2 predictions and 1 references"):
            generation_metrics(["a", "b"], ["a"], embedder)
