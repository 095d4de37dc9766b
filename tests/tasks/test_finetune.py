"""LoRA fine-tuning of a real tiny base, in process and in a time-limited child."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from driftloop.errors import ConfigError
from tasks import finetune as finetune_module
from tasks.finetune import (
    FinetuneSettings,
    TrainingFailed,
    add_adapters,
    load_adapter,
    read_chats,
    run_training,
    train_adapter,
)
from tasks.lm import encode_chat, load_model
from tasks.training import mean_loss, seed_everything

TINY_LORA = {
    "learning_rate": 1e-2,
    "epochs": 8,
    "batch_size": 8,
    "max_length": 256,
    "eval_every": 20,
    "save_every": 40,
    "device": "cpu",
}


def ticket_chats(count: int, seed: int) -> list[list[dict]]:
    """Chats whose answers follow one rule: echo the ticket number, say it is closed."""
    rng = random.Random(seed)
    chats = []
    for _ in range(count):
        number = rng.randrange(1000, 10000)
        chats.append(
            [
                {"role": "user", "content": f"What about ticket {number}?"},
                {
                    "role": "assistant",
                    "content": f"Ticket {number} is closed. Thanks for waiting!",
                },
            ]
        )
    return chats


def write_chats(path: Path, chats: list[list[dict]]) -> Path:
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tiny_base, tmp_path_factory):
    """Train one adapter on the ticket rule; keep what each test looks at."""
    base = str(tiny_base[0])
    before = digest(tiny_base[0] / "model.safetensors")
    out = tmp_path_factory.mktemp("adapter")
    settings = FinetuneSettings(**TINY_LORA)
    steps: list[dict] = []
    validation = ticket_chats(24, seed=2)
    result = train_adapter(
        base, ticket_chats(80, seed=1), validation, out, settings, steps.append
    )
    return {
        "base": base,
        "base_digest": before,
        "out": out,
        "settings": settings,
        "steps": steps,
        "result": result,
        "validation": validation,
    }


class TestTrainAdapter:
    def test_every_lora_parameter_changes(self, trained):
        model, _ = load_model(trained["base"], "cpu")
        seed_everything(trained["settings"].seed)
        initial = add_adapters(model, trained["settings"])
        final, _ = load_adapter(trained["base"], trained["out"] / "adapter", "cpu")
        before = {n: p for n, p in initial.named_parameters() if "lora_" in n}
        after = {n: p for n, p in final.named_parameters() if "lora_" in n}
        assert before.keys() == after.keys() and len(before) == 2 * 4 * 2
        unchanged = [n for n in before if torch.equal(before[n], after[n])]
        assert not unchanged

    def test_the_base_weights_are_untouched(self, trained):
        adapter = load_file(trained["out"] / "adapter" / "adapter_model.safetensors")
        assert all("lora_" in name for name in adapter)
        base_file = Path(trained["base"]) / "model.safetensors"
        assert digest(base_file) == trained["base_digest"]

    def test_the_validation_loss_falls_on_a_learnable_rule(self, trained):
        base, tokenizer = load_model(trained["base"], "cpu")
        examples = [encode_chat(tokenizer, c, 256) for c in trained["validation"]]
        before = mean_loss(base, examples, 8, tokenizer.pad_token_id, "cpu")
        assert trained["result"]["validation_loss"] < 0.8 * before

    def test_the_adapter_and_checkpoints_are_safetensors(self, trained):
        out = trained["out"]
        for folder in (out / "adapter", out / "checkpoints" / "step-40"):
            assert (folder / "adapter_model.safetensors").is_file()
            assert (folder / "adapter_config.json").is_file()
        assert (out / "adapter" / "chat_template.jinja").is_file()
        assert not [p for p in out.rglob("*") if p.suffix in {".bin", ".pt", ".pkl"}]

    def test_every_step_reports_its_train_loss_and_tokens(self, trained):
        train = [s for s in trained["steps"] if "train_loss" in s]
        assert [s["step"] for s in train] == list(range(1, 81))
        tokens = [s["tokens"] for s in train]
        assert tokens == sorted(tokens) and tokens[0] > 0

    def test_validation_loss_is_reported_every_eval_every_steps_and_at_the_end(
        self, trained
    ):
        validation = [s for s in trained["steps"] if "validation_loss" in s]
        assert [s["step"] for s in validation] == [20, 40, 60, 80]
        assert validation[-1]["validation_loss"] == trained["result"]["validation_loss"]

    def test_the_result_reports_the_run(self, trained):
        result = trained["result"]
        assert result["steps"] == 80 and result["device"] == "cpu"
        assert result["trainable_parameters"] == 2 * 4 * (64 * 8 + 8 * 64)
        assert result["tokens_per_s"] > 0 and result["peak_memory_mb"] > 0
        assert result["train_loss"] < 2.5

    def test_empty_train_chats_are_refused(self, tiny_base, tmp_path):
        with pytest.raises(ConfigError, match="got no train chats"):
            train_adapter(str(tiny_base[0]), [], ticket_chats(2, 0), tmp_path)

    def test_empty_validation_chats_are_refused(self, tiny_base, tmp_path):
        with pytest.raises(ConfigError, match="got no validation chats"):
            train_adapter(str(tiny_base[0]), ticket_chats(2, 0), [], tmp_path)

    def test_target_modules_the_base_lacks_are_refused(self, tiny_base, tmp_path):
        settings = FinetuneSettings(target_modules=["attn_qkv"], device="cpu")
        with pytest.raises(ConfigError, match="TARGET_MODULES=\\['attn_qkv'\\]"):
            train_adapter(
                str(tiny_base[0]),
                ticket_chats(2, 0),
                ticket_chats(2, 1),
                tmp_path,
                settings,
            )


class TestLoadAdapter:
    def test_a_loaded_adapter_gives_the_reported_validation_loss(self, trained):
        model, tokenizer = load_adapter(
            trained["base"], trained["out"] / "adapter", "cpu"
        )
        examples = [encode_chat(tokenizer, c, 256) for c in trained["validation"]]
        loss = mean_loss(model, examples, 8, tokenizer.pad_token_id, "cpu")
        assert not model.training
        assert loss == pytest.approx(trained["result"]["validation_loss"], rel=1e-4)

    def test_an_adapter_saved_with_pickle_is_refused(self, trained, tmp_path):
        adapter = trained["out"] / "adapter"
        (tmp_path / "adapter_config.json").write_bytes(
            (adapter / "adapter_config.json").read_bytes()
        )
        weights = load_file(adapter / "adapter_model.safetensors")
        torch.save(weights, tmp_path / "adapter_model.bin")
        with pytest.raises(ConfigError) as refused:
            load_adapter(trained["base"], tmp_path, "cpu")
        message = str(refused.value)
        assert (
            "holds adapter_model.bin, pickle weights, which driftloop refuses"
            in message
        )
        assert "expected adapter_model.safetensors" in message


class TestRunTraining:
    def spec(self, tmp_path: Path, base: str, **settings) -> dict:
        return {
            "base": base,
            "train_path": str(
                write_chats(tmp_path / "train.jsonl", ticket_chats(40, 1))
            ),
            "validation_path": str(
                write_chats(tmp_path / "validation.jsonl", ticket_chats(8, 2))
            ),
            "out_dir": str(tmp_path / "out"),
            "settings": {**TINY_LORA, **settings},
        }

    def test_a_child_run_streams_every_step_and_the_parent_shows_them(
        self, tiny_base, tmp_path, monkeypatch
    ):
        bars = []
        real = finetune_module.progress

        @contextlib.contextmanager
        def recording(description, total):
            # The real bar, with its advances counted: the child draws none we see.
            with real(description, total) as bar:
                bars.append([description, total, 0])
                advance = bar.advance

                def counted(n=1):
                    bars[-1][2] += n
                    advance(n)

                bar.advance = counted
                yield bar

        monkeypatch.setattr(finetune_module, "progress", recording)
        spec = self.spec(tmp_path, str(tiny_base[0]), max_steps=6, eval_every=3)
        result = run_training(spec, tmp_path / "work", timeout_s=300)
        train = [m for m in result["metrics"] if "train_loss" in m]
        assert [m["step"] for m in train] == [1, 2, 3, 4, 5, 6]
        assert bars == [["Fine-tuning the adapter", 6, 6]]
        assert result["steps"] == 6
        assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()

    def test_a_run_past_its_limit_is_killed_and_named(self, tiny_base, tmp_path):
        spec = self.spec(tmp_path, str(tiny_base[0]), epochs=50)
        started = time.monotonic()
        with pytest.raises(TrainingFailed) as failed:
            run_training(spec, tmp_path / "work", timeout_s=0.5)
        message = str(failed.value)
        assert "ran past its wall-clock limit of 0.5 s and was killed" in message
        assert "DRIFTLOOP_FINETUNE_TIMEOUT_S" in message
        assert time.monotonic() - started < 10

    def test_a_crashing_child_raises_with_its_error(self, tmp_path):
        spec = self.spec(tmp_path, str(tmp_path / "no-such-base"))
        with pytest.raises(TrainingFailed) as failed:
            run_training(spec, tmp_path / "work", timeout_s=300)
        message = str(failed.value)
        assert "exited with status 2" in message
        assert "is neither a local folder nor in the Hugging Face cache" in message

    def test_a_line_that_is_not_a_chat_is_refused_with_its_place(self, tmp_path):
        path = tmp_path / "train.jsonl"
        path.write_text('{"messages": []}\n{"prompt": "hi"}\n')
        with pytest.raises(ConfigError, match=r"train.jsonl:2 is not a chat line"):
            read_chats(path)


class TestSettings:
    def test_settings_are_read_from_driftloop_finetune_variables(self, monkeypatch):
        monkeypatch.setenv("DRIFTLOOP_FINETUNE_TARGET_MODULES", '["q_proj", "v_proj"]')
        monkeypatch.setenv("DRIFTLOOP_FINETUNE_RANK", "4")
        settings = FinetuneSettings()
        assert settings.target_modules == ["q_proj", "v_proj"]
        assert settings.rank == 4

    def test_every_setting_is_described(self):
        assert all(f.description for f in FinetuneSettings.model_fields.values())
