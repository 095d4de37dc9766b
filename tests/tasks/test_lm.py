"""The base model: chat encoding, a real tiny pretraining run, loading and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from driftloop.errors import ConfigError
from tasks.lm import (
    CHAT_TEMPLATE,
    BaseModelSettings,
    build_base,
    encode_chat,
    load_model,
    make_tokenizer,
    pick_device,
    pretrain,
    save_model,
)
from tasks.training import IGNORE, mean_loss
from tests.tasks.conftest import TINY

CHAT = [
    {"role": "system", "content": "You are the Nimbus Store assistant."},
    {"role": "user", "content": "Where is my parcel?"},
    {"role": "assistant", "content": "It left the warehouse today."},
    {"role": "user", "content": "And when does it arrive?"},
    {"role": "assistant", "content": "On Friday, before noon."},
]


def labelled_spans(example: dict) -> list[list[int]]:
    """Return the runs of consecutive tokens that carry a label."""
    spans: list[list[int]] = []
    previous = IGNORE
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != IGNORE:
            if previous == IGNORE:
                spans.append([])
            spans[-1].append(token)
        previous = label
    return spans


class TestChatTemplate:
    def test_every_assistant_turn_ends_with_eos_and_a_prompt_asks_for_an_answer(self):
        tokenizer = make_tokenizer()
        text = tokenizer.apply_chat_template(
            CHAT[:2], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(CHAT, tokenize=False)
        assert text == (
            "<|system|>\nYou are the Nimbus Store assistant.\n"
            "<|user|>\nWhere is my parcel?\n<|assistant|>\n"
        )
        assert "It left the warehouse today.</s><|user|>\n" in full
        assert full.endswith("On Friday, before noon.</s>")


class TestEncodeChat:
    def test_only_the_assistant_answers_and_their_eos_carry_labels(self):
        tokenizer = make_tokenizer()
        example = encode_chat(tokenizer, CHAT, max_length=512)
        spans = [tokenizer.decode(span) for span in labelled_spans(example)]
        assert spans == [
            "It left the warehouse today.</s>",
            "On Friday, before noon.</s>",
        ]
        assert len(example["input_ids"]) == len(example["attention_mask"])

    def test_a_long_chat_loses_its_oldest_tokens_and_keeps_the_final_answer(self):
        tokenizer = make_tokenizer()
        example = encode_chat(tokenizer, CHAT, max_length=60)
        text = tokenizer.decode(example["input_ids"])
        assert len(example["input_ids"]) == 60
        assert text.endswith("<|assistant|>\nOn Friday, before noon.</s>")
        assert "Nimbus" not in text

    def test_a_final_answer_longer_than_max_length_keeps_its_start(self):
        tokenizer = make_tokenizer()
        long_answer = [*CHAT[:2], {"role": "assistant", "content": "x" * 100}]
        example = encode_chat(tokenizer, long_answer, max_length=40)
        assert tokenizer.decode(example["input_ids"]) == "<|assistant|>\n" + "x" * 26
        assert example["labels"][14:] == example["input_ids"][14:]

    def test_a_chat_that_does_not_end_with_an_answer_is_refused(self):
        with pytest.raises(ConfigError, match="last message to be the assistant"):
            encode_chat(make_tokenizer(), CHAT[:2], max_length=512)

    def test_a_message_with_an_unknown_role_is_refused(self):
        chat = [{"role": "tool", "content": "{}"}, CHAT[2]]
        with pytest.raises(ConfigError, match=r"Message 0 .* role in \('system'"):
            encode_chat(make_tokenizer(), chat, max_length=512)


class TestPretrain:
    def test_pretraining_lowers_the_loss_on_its_chats(
        self, tiny_base, pretraining_chats
    ):
        folder, _ = tiny_base
        settings = BaseModelSettings(**TINY)
        fresh, tokenizer = build_base(settings)
        trained, _ = load_model(str(folder), "cpu")
        examples = [encode_chat(tokenizer, c, 256) for c in pretraining_chats]
        before = mean_loss(fresh, examples, 16, tokenizer.pad_token_id, "cpu")
        after = mean_loss(trained, examples, 16, tokenizer.pad_token_id, "cpu")
        assert after < 0.6 * before

    def test_pretraining_writes_safetensors_and_no_pickle(self, tiny_base):
        folder, _ = tiny_base
        names = {path.name for path in folder.iterdir()}
        assert "model.safetensors" in names
        assert "chat_template.jinja" in names
        assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]

    def test_the_safetensors_hold_every_weight_of_the_model(self, tiny_base):
        folder, result = tiny_base
        weights = load_file(Path(folder) / "model.safetensors")
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == ["LlamaForCausalLM"]
        assert sum(t.numel() for t in weights.values()) == result["parameters"]

    def test_pretraining_reports_its_figures(self, tiny_base):
        _, result = tiny_base
        assert result["steps"] == 3 * 15
        assert result["tokens_seen"] > 0 and result["tokens_per_s"] > 0
        assert 100_000 < result["parameters"] < 200_000
        assert result["loss"] < 3.5

    def test_on_step_receives_the_loss_of_every_step(self, tmp_path, pretraining_chats):
        steps: list[dict] = []
        settings = BaseModelSettings(**{**TINY, "max_steps": 3})
        pretrain(pretraining_chats[:40], tmp_path, settings, on_step=steps.append)
        assert [s["step"] for s in steps] == [1, 2, 3]
        assert all(s["loss"] > 0 for s in steps)

    def test_no_chats_are_refused(self, tmp_path):
        with pytest.raises(ConfigError, match="Pretraining got no chats"):
            pretrain([], tmp_path, BaseModelSettings(**TINY))


class TestLoadModel:
    def test_a_saved_base_loads_with_the_same_weights_and_template(self, tmp_path):
        model, tokenizer = build_base(BaseModelSettings(**TINY))
        save_model(model, tokenizer, tmp_path)
        loaded, loaded_tokenizer = load_model(str(tmp_path), "cpu")
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[name], tensor)
        assert loaded_tokenizer.chat_template == CHAT_TEMPLATE
        assert loaded_tokenizer.pad_token_id == tokenizer.pad_token_id

    def test_a_tokenizer_without_a_template_gets_driftloops(self, tmp_path):
        model, tokenizer = build_base(BaseModelSettings(**TINY))
        save_model(model, tokenizer, tmp_path)
        (tmp_path / "chat_template.jinja").unlink()
        _, loaded_tokenizer = load_model(str(tmp_path), "cpu")
        assert loaded_tokenizer.chat_template == CHAT_TEMPLATE

    def test_a_folder_with_only_pickle_weights_is_refused(self, tmp_path):
        model, _ = build_base(BaseModelSettings(**TINY))
        model.config.save_pretrained(tmp_path)
        torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
        with pytest.raises(ConfigError) as refused:
            load_model(str(tmp_path), "cpu")
        message = str(refused.value)
        assert "only pickle weights (pytorch_model.bin)" in message
        assert "refuses pickle" in message
        assert "save_pretrained(folder, safe_serialization=True)" in message

    def test_a_missing_model_is_refused_with_the_fix(self, tmp_path):
        missing = str(tmp_path / "no-such-model")
        with pytest.raises(ConfigError) as refused:
            load_model(missing, "cpu")
        message = str(refused.value)
        assert (
            f"{missing!r} is neither a local folder nor in the Hugging Face" in message
        )
        assert "downloads are off" in message

    def test_a_folder_without_config_is_refused(self, tmp_path):
        (tmp_path / "notes.json").write_text(json.dumps({}))
        with pytest.raises(ConfigError, match=r"has no config\.json"):
            load_model(str(tmp_path), "cpu")


class TestDevice:
    def test_auto_picks_cuda_when_present_else_mps_else_cpu(self):
        expected = (
            "cuda"
            if torch.cuda.is_available()
            else "mps"
            if torch.backends.mps.is_available()
            else "cpu"
        )
        assert pick_device("auto") == expected

    def test_an_unknown_device_is_refused(self):
        with pytest.raises(ConfigError, match="'tpu' is not one of auto, cpu"):
            pick_device("tpu")


class TestSettings:
    def test_settings_are_read_from_driftloop_base_variables(self, monkeypatch):
        monkeypatch.setenv("DRIFTLOOP_BASE_LAYERS", "2")
        assert BaseModelSettings().layers == 2

    def test_every_setting_is_described(self):
        assert all(f.description for f in BaseModelSettings.model_fields.values())
