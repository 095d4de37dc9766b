"""Curation filter throughput: each stage of `flows.curate`, in order, on one frame.

    python -m bench curate                                  # 100,000 candidates
    BENCH_CURATE_CANDIDATES=5000 python -m bench curate     # quicker
    BENCH_CURATE_EMBED=500 python -m bench curate           # fewer texts embedded

Candidates are one simulated day of support-assistant traffic, every row a "quality"
candidate whose target is the logged answer; each stage takes the previous one's
output, as `curate_one` calls it. Two stages are measured on part of the frame:
quality (Evidently descriptors) on a random 10,000-row subsample, and embedding cold on
at most BENCH_CURATE_EMBED unique texts, then extrapolated to all of them. The stages
after it get a seeded random unit vector per distinct text instead of embeddings
(identical texts share one, nothing else is similar), so they time the matrix work.
Baselines: near-dedup by an all-pairs Python loop (a numpy dot per pair) against
`near_duplicates`, both on the first 2,000 deduplicated rows whose texts were embedded
(real vectors), and exact dedup by pandas `drop_duplicates` on the raw text.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CANDIDATES = int(os.environ.get("BENCH_CURATE_CANDIDATES", "100000"))
EMBED = int(os.environ.get("BENCH_CURATE_EMBED", "3000"))
QUALITY_SAMPLE, BASELINE_ROWS, EVAL_PROMPTS, DIM = 10_000, 2_000, 200, 384
MODEL = "support-assistant"
RANDOM = "random unit vector per distinct text, not embeddings"


def run() -> list[dict]:
    from tasks import filters, split
    from tasks.curation import CurateSettings
    from tasks.pii import Scrubber

    settings, rows = CurateSettings(), []

    def stage(name, rows_in, rows_out, seconds, note=""):
        rate = rows_in / seconds if seconds else 0.0
        rows.append(
            {
                "stage": name,
                "rows_in": rows_in,
                "rows_out": rows_out,
                "seconds": seconds,
                "rows_per_s": rate,
                "note": note,
            }
        )

    frame, evaluation = _candidates(CANDIDATES, seed=3), _eval_prompts()
    n = len(frame)
    (frame, safe, pii), s = _timed(filters.scrub, frame, Scrubber("regex"))
    stage("scrub (regex)", n, int(safe.sum()), s, f"{sum(pii.values()):,} PII spans")
    frame = frame[safe].reset_index(drop=True)

    (keep, hits), s = _timed(filters.injection, frame)
    stage("injection", len(frame), int(keep.sum()), s, _reasons(hits))
    frame = frame[keep].reset_index(drop=True)

    picked = np.sort(
        np.random.default_rng(0).choice(
            len(frame), min(QUALITY_SAMPLE, len(frame)), replace=False
        )
    )
    # A fresh RangeIndex, as the flow's frames have: `describe` misreads any other.
    sample = frame.iloc[picked].reset_index(drop=True)
    (keep, reasons), s = _timed(filters.quality, sample, settings)
    rest = len(frame) - len(picked)
    stage(
        "quality (Evidently)",
        len(picked),
        int(keep.sum()),
        s,
        f"random {len(picked):,}-row subsample, rate measured there; the other "
        f"{rest:,} rows pass unchecked; {_reasons(reasons)}",
    )
    frame = frame.drop(index=picked[~keep]).reset_index(drop=True)

    keep, s = _timed(filters.exact_duplicates, frame)
    stage("exact_duplicates", len(frame), int(keep.sum()), s, "normalised text")
    raw, s = _timed(frame.drop_duplicates, subset=["prompt", "target"])
    stage(
        "baseline: pandas drop_duplicates",
        len(frame),
        len(raw),
        s,
        f"raw (prompt, target); normalising drops {len(raw) - int(keep.sum()):,} more",
    )
    frame = frame[keep].reset_index(drop=True)

    texts = list(dict.fromkeys(_interleave(frame["prompt"], frame["target"])))
    vectors = _embed(texts[:EMBED], stage, len(texts))
    prompts, targets, eval_vectors = _random_vectors(
        frame["prompt"].tolist(), frame["target"].tolist(), evaluation
    )

    # The first rows whose prompt and target were both embedded: real vectors.
    embedded = frame["prompt"].isin(vectors) & frame["target"].isin(vectors)
    sub = frame[embedded.to_numpy()].iloc[:BASELINE_ROWS].reset_index(drop=True)
    p = np.array([vectors[x] for x in sub["prompt"]], np.float32).reshape(-1, DIM)
    t = np.array([vectors[x] for x in sub["target"]], np.float32).reshape(-1, DIM)
    fast, s = _timed(filters.near_duplicates, sub, p, t, settings.near_duplicate)
    naive, s_naive = _timed(_naive_near, sub, p, t, settings.near_duplicate)
    agree = "agree" if (fast == naive).all() else "DISAGREE"
    for name, mask, secs in (
        ("near_duplicates (baseline subsample)", fast, s),
        ("baseline: all-pairs Python loop", naive, s_naive),
    ):
        note = f"embeddings; kept {int(fast.sum()):,} vs {int(naive.sum()):,}: {agree}"
        stage(name, len(sub), int(mask.sum()), secs, note)

    keep, s = _timed(
        filters.near_duplicates, frame, prompts, targets, settings.near_duplicate
    )
    stage("near_duplicates", len(frame), int(keep.sum()), s, RANDOM)
    frame, prompts = frame[keep].reset_index(drop=True), prompts[keep]

    keep, s = _timed(
        filters.decontaminate,
        frame,
        prompts,
        evaluation,
        eval_vectors,
        settings.decontamination,
    )
    note = f"{len(evaluation)} eval prompts (golden + held-out traffic); {RANDOM}"
    stage("decontaminate", len(frame), int(keep.sum()), s, note)
    frame, prompts = frame[keep].reset_index(drop=True), prompts[keep]

    keep, s = _timed(filters.cap_per_user, frame, settings.max_per_user)
    note = f"limit {settings.max_per_user} a user"
    stage("cap_per_user", len(frame), int(keep.sum()), s, note)
    frame, prompts = frame[keep].reset_index(drop=True), prompts[keep]

    keep, s = _timed(filters.balance_topics, frame, settings.max_topic_share)
    note = f"max share {settings.max_topic_share}"
    stage("balance_topics", len(frame), int(keep.sum()), s, note)
    frame, prompts = frame[keep].reset_index(drop=True), prompts[keep]

    # The flow's example ids (flows.curate._examples), which split groups fall back on.
    examples = frame.assign(
        example_id=[
            hashlib.sha256(f"{m}\x1f{r}".encode()).hexdigest()[:16]
            for m, r in zip(frame["model"], frame["request_id"], strict=True)
        ]
    )
    start = time.perf_counter()
    labels = split.groups(examples, prompts, settings.split_similarity)
    sides = split.assign(examples, labels, settings.validation_share, settings.seed)
    s = time.perf_counter() - start
    note = f"{labels.max() + 1:,} groups, {(sides == 'validation').sum():,} validation"
    stage("split.groups + split.assign", len(frame), len(frame), s, f"{note}; {RANDOM}")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append({"stage": "peak RSS", "note": f"{peak:,.0f} MB, whole process"})
    return rows


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _reasons(counts) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.most_common()) or "none dropped"


def _interleave(*columns):
    return (text for row in zip(*columns, strict=True) for text in row)


def _candidates(size: int, seed: int) -> pd.DataFrame:
    """Simulated support traffic as `tasks.curation._candidates` frames it."""
    from tasks.datasets import user_hash
    from tasks.simulate import SimulationConfig, iter_interactions

    config = SimulationConfig(days=1, per_day=size, seed=seed, malformed=False)
    records = list(itertools.islice(iter_interactions(config), size))
    conversations = [
        [{"role": m["role"], "content": m["content"] or ""} for m in r["messages"]]
        for r in records
    ]
    return pd.DataFrame(
        {
            "request_id": [r["request_id"] for r in records],
            "model": [r["model"] for r in records],
            "timestamp": pd.to_datetime(
                [r["timestamp"] for r in records], format="ISO8601", utc=True
            ),
            "session_id": [r["session_id"] or r["request_id"] for r in records],
            "user_hash": [user_hash(r["user_id"]) for r in records],
            "source": "quality",
            "topic": [r["topic"] for r in records],
            "drift": False,
            "conversation": conversations,
            "prompt": [_last_user(c) for c in conversations],
            "target": [r["response"] or "" for r in records],
            "origin": "simulated",
            "origin_line": np.arange(len(records)),
        }
    )


def _last_user(conversation: list[dict]) -> str:
    users = [m["content"] for m in conversation if m["role"] == "user"]
    return users[-1] if users else ""


def _eval_prompts() -> list[str]:
    """The golden prompts, then prompts of other traffic (validation's stand-in)."""
    from evals import golden

    prompts = [golden.prompt_of(e) for e in golden.load_golden(MODEL)]
    held_out = _candidates(20 * EVAL_PROMPTS, seed=4)["prompt"]
    return list(dict.fromkeys([*prompts, *held_out]))[:EVAL_PROMPTS]


def _embed(texts: list[str], stage, total: int) -> dict[str, np.ndarray]:
    """Embed texts with a cold cache; add a measured and an extrapolated row."""
    from tasks.embeddings import Embedder

    cache = Path(tempfile.mkdtemp(prefix="driftloop-bench-curate-"))
    try:
        embedder = Embedder(cache_dir=cache)
        (_, load) = _timed(lambda: embedder.dimension)
        vectors, s = _timed(embedder.encode, texts)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    rate = len(texts) / s if s else 0.0
    note = f"texts, not rows; cold cache; model load {load:.1f} s apart"
    stage(f"embed {len(texts):,} texts (cold)", len(texts), len(texts), s, note)
    note = f"all {total:,} unique prompts + targets after exact dedup, at that rate"
    stage("embed all (extrapolated)", total, total, total / rate if rate else 0, note)
    return dict(zip(texts, vectors, strict=True))


def _random_vectors(*groups: list[str]) -> list[np.ndarray]:
    """A seeded random unit vector per distinct text, looked up for each group."""
    codes, uniques = pd.factorize(pd.Series([t for g in groups for t in g]))
    table = np.random.default_rng(0).standard_normal((len(uniques), DIM))
    table = (table / np.linalg.norm(table, axis=1, keepdims=True)).astype(np.float32)
    bounds = np.cumsum([0, *(len(g) for g in groups)])
    return [table[codes[a:b]] for a, b in itertools.pairwise(bounds)]


def _naive_near(frame, prompts, targets, threshold) -> np.ndarray:
    """Drop a row whose prompt and target both copy a higher-ranked row's, pairwise."""
    from tasks.filters import priority_order

    order = priority_order(frame)
    keep = np.ones(len(frame), dtype=bool)
    for a, i in enumerate(order):
        for j in order[:a]:
            close = prompts[i] @ prompts[j] >= threshold
            if close and targets[i] @ targets[j] >= threshold:
                keep[i] = False
                break
    return keep
