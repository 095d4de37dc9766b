"""The embedder: the real bundled model, a real SQLite cache, real processes."""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from driftloop.errors import ConfigError, DriftloopError
from tasks.embeddings import (
    DEFAULT_MODEL,
    Embedder,
    EmbeddingCache,
    EmbeddingSettings,
    choose_backend,
    resolve_model,
    text_key,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PASSWORD = "How do I reset my password?"
PASSWORD_AGAIN = "I forgot my password, how can I change it?"
SHIPPING = "What does shipping to Canada cost?"


@pytest.fixture
def embedder(tmp_path: Path) -> Embedder:
    return Embedder(cache_dir=tmp_path / "cache")


def bundled_copy(tmp_path: Path, pooling: dict) -> Path:
    """Link the bundled model's files into a new folder with another pooling config."""
    source = resolve_model(DEFAULT_MODEL).path
    target = tmp_path / "minilm-pooled-otherwise"
    for file in source.rglob("*"):
        if file.is_file():
            (target / file.relative_to(source)).parent.mkdir(
                parents=True, exist_ok=True
            )
            (target / file.relative_to(source)).symlink_to(file)
    pooling_config = target / "1_Pooling" / "config.json"
    config = json.loads(pooling_config.read_text())
    pooling_config.unlink()
    pooling_config.write_text(json.dumps({**config, **pooling}))
    return target


class TestSettings:
    def test_the_default_model_is_the_bundled_all_minilm_on_torch(self, embedder):
        assert embedder.source.name == "all-MiniLM-L6-v2"
        assert embedder.identity.startswith("all-MiniLM-L6-v2@")
        assert embedder.identity.endswith("/torch")
        assert embedder.backend == "torch"

    def test_settings_are_read_from_driftloop_embedding_variables(self, monkeypatch):
        monkeypatch.setenv("DRIFTLOOP_EMBEDDING_BATCH_SIZE", "8")
        monkeypatch.setenv("DRIFTLOOP_EMBEDDING_CACHE", "false")
        settings = EmbeddingSettings()
        assert (settings.batch_size, settings.cache) == (8, False)
        assert settings.model == DEFAULT_MODEL
        assert settings.device == "auto"

    def test_every_setting_is_described(self):
        fields = EmbeddingSettings.model_fields.values()
        assert all(field.description for field in fields)


class TestEncode:
    def test_rows_are_unit_length_float32_in_the_order_given(self, embedder):
        vectors = embedder.encode([PASSWORD, SHIPPING])
        assert vectors.shape == (2, 384)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(vectors[1], embedder.encode([SHIPPING])[0])

    def test_duplicated_texts_are_embedded_once_and_get_identical_vectors(
        self, embedder
    ):
        vectors = embedder.encode([PASSWORD, SHIPPING, PASSWORD, PASSWORD])
        assert embedder.embedded == 2
        np.testing.assert_array_equal(vectors[0], vectors[2])
        np.testing.assert_array_equal(vectors[0], vectors[3])

    def test_a_text_seen_before_is_not_embedded_again(self, embedder):
        embedder.encode([PASSWORD])
        embedder.encode([PASSWORD, SHIPPING])
        assert embedder.embedded == 2

    def test_a_new_embedder_reads_the_cache_and_embeds_nothing(self, tmp_path):
        first = Embedder(cache_dir=tmp_path).encode([PASSWORD, SHIPPING])
        again = Embedder(cache_dir=tmp_path)
        second = again.encode([SHIPPING, PASSWORD])
        assert again.embedded == 0
        np.testing.assert_array_equal(second, first[::-1])

    def test_without_the_cache_nothing_is_written_to_disk(self, tmp_path):
        settings = EmbeddingSettings(cache=False)
        Embedder(settings, cache_dir=tmp_path).encode([PASSWORD])
        again = Embedder(settings, cache_dir=tmp_path)
        again.encode([PASSWORD])
        assert again.embedded == 1
        assert not any(tmp_path.iterdir())

    def test_the_cache_lies_under_home_by_default(self, driftloop_home):
        embedder = Embedder()
        assert embedder.cache.path.parent == driftloop_home / "cache" / "embeddings"

    def test_paraphrases_are_closer_than_unrelated_texts(self, embedder):
        password, again, shipping = embedder.encode(
            [PASSWORD, PASSWORD_AGAIN, SHIPPING]
        )
        assert password @ again > password @ shipping + 0.3

    def test_batches_smaller_than_the_input_give_the_same_vectors(self, tmp_path):
        texts = [PASSWORD, PASSWORD_AGAIN, SHIPPING, "Cancel my order, please."]
        small = EmbeddingSettings(batch_size=1, cache=False)
        one_by_one = Embedder(small, cache_dir=tmp_path).encode(texts)
        together = Embedder(cache_dir=tmp_path).encode(texts)
        np.testing.assert_allclose(one_by_one, together, atol=1e-5)

    def test_no_texts_give_an_empty_matrix_of_the_model_width(self, embedder):
        assert embedder.encode([]).shape == (0, 384)

    def test_a_missing_text_is_refused_with_its_position(self, embedder):
        with pytest.raises(
            DriftloopError, match=r"texts\[1\] is NoneType, expected str"
        ):
            embedder.encode([PASSWORD, None])


class TestIdentity:
    def test_another_pooling_gives_another_identity_and_its_own_vectors(self, tmp_path):
        mean = Embedder(cache_dir=tmp_path / "cache")
        cls_path = bundled_copy(
            tmp_path,
            {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True},
        )
        cls = Embedder(
            EmbeddingSettings(model=str(cls_path)), cache_dir=tmp_path / "cache"
        )
        assert cls.identity != mean.identity
        assert cls.identity.split("@")[0] == "minilm-pooled-otherwise"

        by_mean = mean.encode([PASSWORD])[0]
        by_cls = cls.encode([PASSWORD])[0]
        assert cls.embedded == 1
        assert by_mean @ by_cls < 0.99

    def test_the_same_files_give_the_same_identity(self):
        assert Embedder().identity == Embedder().identity

    def test_the_cache_never_returns_a_vector_stored_under_another_identity(
        self, tmp_path
    ):
        cache = EmbeddingCache(tmp_path)
        cache.put("model-a@1/torch", [text_key(PASSWORD)], np.ones((1, 4), np.float32))
        assert cache.get("model-b@2/torch", [text_key(PASSWORD)]) == {}
        assert list(cache.get("model-a@1/torch", [text_key(PASSWORD)])) == [
            text_key(PASSWORD)
        ]


def write_vectors(folder: str, offset: int) -> int:
    """Add 2,000 vectors to the cache in 40 small transactions; runs in a child."""
    cache = EmbeddingCache(Path(folder))
    for start in range(offset, offset + 2_000, 50):
        keys = [text_key(f"text {i}") for i in range(start, start + 50)]
        cache.put("writer@test/torch", keys, np.full((50, 8), offset, np.float32))
    return offset


class TestConcurrency:
    def test_two_processes_can_write_the_cache_at_once(self, tmp_path):
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(2, mp_context=spawn) as pool:
            done = list(pool.map(write_vectors, [str(tmp_path)] * 2, [0, 1_000]))
        assert done == [0, 1_000]

        keys = [text_key(f"text {i}") for i in range(3_000)]
        found = EmbeddingCache(tmp_path).get("writer@test/torch", keys)
        assert len(found) == 3_000
        assert all(vector.shape == (8,) for vector in found.values())


class TestModelChoice:
    def test_a_missing_model_path_is_refused_with_its_name(self):
        with pytest.raises(ConfigError, match="'/no/such/model' is neither a local"):
            Embedder(EmbeddingSettings(model="/no/such/model"))

    def test_the_refusal_says_downloads_are_off_and_what_to_set(self):
        with pytest.raises(
            ConfigError, match=r"DRIFTLOOP_EMBEDDING_MODEL.*downloads are off"
        ):
            Embedder(EmbeddingSettings(model="acme/not-cached-anywhere"))

    def test_a_folder_that_is_not_a_model_is_refused(self, tmp_path):
        (tmp_path / "notes.txt").write_text("not a model")
        with pytest.raises(
            ConfigError, match=r"neither config\.json nor modules\.json"
        ):
            Embedder(EmbeddingSettings(model=str(tmp_path)))

    def test_a_model_that_fails_to_load_is_refused_with_its_name(self, tmp_path):
        broken = tmp_path / "broken-model"
        broken.mkdir()
        (broken / "config.json").write_text("{}")
        embedder = Embedder(EmbeddingSettings(model=str(broken)), cache_dir=tmp_path)
        with pytest.raises(ConfigError, match=r"'broken-model' at .* cannot be loaded"):
            embedder.encode([PASSWORD])

    def test_a_name_in_the_hugging_face_cache_is_found_offline(
        self, tmp_path, monkeypatch
    ):
        import huggingface_hub.constants

        repo = tmp_path / "hub" / "models--acme--tiny-embedder"
        (repo / "snapshots" / "abc123").mkdir(parents=True)
        (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("abc123")
        monkeypatch.setattr(
            huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub")
        )

        source = resolve_model("acme/tiny-embedder")
        assert source.name == "acme/tiny-embedder"
        assert source.path == repo / "snapshots" / "abc123"

    def test_onnx_is_chosen_only_with_the_runtime_and_an_export(self, tmp_path):
        (tmp_path / "onnx").mkdir()
        assert choose_backend(tmp_path, onnx_runtime=True) == "torch"
        (tmp_path / "onnx" / "model.onnx").write_bytes(b"")
        assert choose_backend(tmp_path, onnx_runtime=False) == "torch"
        assert choose_backend(tmp_path, onnx_runtime=True) == "onnx"
