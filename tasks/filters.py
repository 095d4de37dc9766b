"""Filters a retraining candidate must pass; each returns which rows to keep.

Every function takes the candidates frame of `tasks.curation` and returns a boolean
keep mask (or a scrubbed copy with one), so the flow can count what each stage removed
and say why in the dataset card.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from tasks.curation import SOURCE_PRIORITY, CurateSettings

# Rows of similarity computed at once: 512 x 100k float32 is 200 MB.
_BLOCK = 512

# Instructions aimed at the model rather than questions for it. A user turn matching
# one never trains the model: the answer either obeyed (poison) or refused (noise).
# Each pattern needs the attack's grammar (who is addressed, what is overridden), not
# a lone keyword: "forget my previous address" or "developer mode on my hub" are
# ordinary support questions, and dropping them would bias the dataset.
_PATTERNS = {
    "ignore_instructions": r"\b(?:ignore|disregard|forget)\b[^.\n]{0,30}"
    r"\b(?:previous|prior|above|earlier|all|your|system)\b[^.\n]{0,20}"
    r"\b(?:instructions|prompts?|guidelines|directives|programming)\b",
    "reveal_prompt": r"\b(?:reveal|print|show|repeat|output|leak|tell\s+me)\b"
    r"[^.\n]{0,30}(?:\b(?:system|hidden|secret)\s+prompt\b|\byour\s+(?:hidden|"
    r"secret|initial|original|system)\s+(?:instructions|prompt|message)\b)",
    "role_override": r"\byou\s+are\s+now\s+(?:an?\s+(?:\w+\s+){0,3}(?:ai|bot|"
    r"assistant|model)\b|DAN\b|free\b|unrestricted\b|jailbroken\b)|\byou\s+are\s+"
    r"no\s+longer\s+(?:bound|restricted|an?\s+(?:ai|assistant))\b|\bfrom\s+now\s+"
    r"on,?\s+you\s+(?:will|must)\s+(?:ignore|answer\s+every|obey|pretend)\b",
    "jailbreak_persona": r"\bdo\s+anything\s+now\b|\b(?:you|yourself)\b[^.\n]{0,20}"
    r"\b(?:developer|god|unfiltered)\s+mode\b|\byou\s+(?:now\s+)?have\s+no\s+"
    r"(?:restrictions|filters|limits|rules|guidelines)\b|\bevil\s+(?:ai|assistant)\b",
    "pretend_unrestricted": r"\b(?:pretend|act|imagine|roleplay)\b[^.\n]{0,40}"
    r"\b(?:no|without)\s+(?:rules|restrictions|guidelines|filters|policies)\b",
    "fake_system_turn": r"<\|?(?:im_start|system)\|?>|\[/?INST\]|<</?SYS>>|"
    r"(?:^|\n)\s*(?:system|assistant)\s*:\s*(?:you\s+are|ignore|new\s+instructions|"
    r"the\s+user\s+is\s+an?\s+admin)",
}
INJECTION_PATTERNS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.IGNORECASE) for name, pattern in _PATTERNS.items()
}
# "DAN" is a name in lower case; only the persona is written in capitals.
INJECTION_PATTERNS["jailbreak_persona_dan"] = re.compile(
    r"\b(?i:you\s+are|act\s+as|become|enable)\s+DAN\b|\bDAN\s+mode\b"
)


def priority_order(frame: pd.DataFrame) -> np.ndarray:
    """Row order from strongest evidence to weakest, then oldest first."""
    rank = frame["source"].map(SOURCE_PRIORITY).to_numpy()
    keys = (frame["request_id"].to_numpy(), frame["timestamp"].to_numpy(), rank)
    return np.lexsort(keys)


def forget(frame: pd.DataFrame, tombstones: frozenset[str]) -> np.ndarray:
    """Keep rows whose user has not asked to be forgotten."""
    return ~frame["user_hash"].isin(tombstones).to_numpy()


def scrub(frame: pd.DataFrame, scrubber) -> tuple[pd.DataFrame, np.ndarray, Counter]:
    """Replace PII in every turn and target; drop rows where any text stays unsafe."""
    counts: Counter = Counter()
    conversations, prompts, targets, safe = [], [], [], []
    for conversation, prompt, target in zip(
        frame["conversation"], frame["prompt"], frame["target"], strict=True
    ):
        ok = True
        cleaned = []
        for message in conversation:
            text, found = scrubber.scrub_with_counts(message["content"])
            counts.update(found)
            ok = ok and not scrubber.residual(text)
            cleaned.append({"role": message["role"], "content": text})
        prompt_text = scrubber.scrub(prompt)
        target_text, found = scrubber.scrub_with_counts(target)
        counts.update(found)
        ok = (
            ok
            and not scrubber.residual(target_text)
            and not scrubber.residual(prompt_text)
        )
        conversations.append(cleaned)
        prompts.append(prompt_text)
        targets.append(target_text)
        safe.append(ok)
    out = frame.assign(conversation=conversations, prompt=prompts, target=targets)
    return out, np.array(safe, dtype=bool), +counts


def _unmasked(text: str) -> str:
    """Text as the patterns must see it: attackers hide words from regexes with
    full-width or styled letters (NFKC folds them) and with zero-width or other
    invisible format characters (category Cf, dropped)."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(c for c in folded if unicodedata.category(c) != "Cf")


def injection(frame: pd.DataFrame) -> tuple[np.ndarray, Counter]:
    """Keep rows whose user turns hold no injection or jailbreak pattern."""
    keep, hits = [], Counter()
    for conversation in frame["conversation"]:
        text = _unmasked(
            "\n".join(m["content"] for m in conversation if m["role"] == "user")
        )
        names = [name for name, p in INJECTION_PATTERNS.items() if p.search(text)]
        hits.update(names[:1])
        keep.append(not names)
    return np.array(keep, dtype=bool), hits


def quality(
    frame: pd.DataFrame, settings: CurateSettings
) -> tuple[np.ndarray, Counter]:
    """Keep answers that are non-empty, in bounds, not refusals, loops or truncations.

    The flags are Evidently descriptors (`tasks.descriptors`), the same the monitor
    watches, so a dataset's filter and the monitor agree on what a bad answer is.
    """
    from tasks.descriptors import _language, describe

    if frame.empty:
        return np.zeros(0, bool), Counter()
    texts = pd.DataFrame({"prompt": frame["prompt"], "response": frame["target"]})
    flags = describe(texts)
    length = frame["target"].str.len().to_numpy()
    human = frame["source"].isin(["correction", "reviewed"]).to_numpy()
    prompt_length = frame["prompt"].str.len().to_numpy()
    reasons = {
        "empty": flags["empty"].to_numpy(),
        "too_short": length < settings.min_chars,
        "too_long": (length > settings.max_chars)
        | (prompt_length > settings.max_chars),
        "refusal": flags["refusal"].to_numpy(),
        # A person's answer may end on a sign-off; only model output gets cut off.
        "truncated": flags["truncated"].to_numpy() & ~human,
        "repetition": flags["repetition"].to_numpy() > 0.3,
        "language_mismatch": flags["language_mismatch"].to_numpy(),
    }
    if settings.languages:
        allowed = set(settings.languages)
        languages = frame["target"].map(_language)
        reasons["language"] = (languages.notna() & ~languages.isin(allowed)).to_numpy()
    return _first_reason(reasons, len(frame))


def _first_reason(reasons: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, Counter]:
    keep = np.ones(n, dtype=bool)
    counts: Counter = Counter()
    for name, hit in reasons.items():
        fresh = hit & keep
        counts[name] += int(fresh.sum())
        keep &= ~hit
    return keep, +counts


def normalise(text: str) -> str:
    """Text as exact dedup compares it: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_key(frame: pd.DataFrame) -> pd.Series:
    """One key per example over its user turns and target, after normalising."""

    def key(conversation: list[dict], target: str) -> str:
        users = [normalise(m["content"]) for m in conversation if m["role"] == "user"]
        body = json.dumps([users[-1:] if users else [], normalise(target)])
        return hashlib.sha256(body.encode()).hexdigest()

    return pd.Series(
        [
            key(c, t)
            for c, t in zip(frame["conversation"], frame["target"], strict=True)
        ],
        index=frame.index,
    )


def exact_duplicates(frame: pd.DataFrame) -> np.ndarray:
    """Keep the strongest example of each normalised (last user turn, target) pair."""
    order = priority_order(frame)
    keys = text_key(frame).to_numpy()[order]
    _, first = np.unique(keys, return_index=True)
    keep = np.zeros(len(frame), dtype=bool)
    keep[order[first]] = True
    return keep


def similar_pairs(
    left: np.ndarray, right: np.ndarray, threshold: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield index arrays (i, j) where cos(left[i], right[j]) >= threshold."""
    for start in range(0, len(left), _BLOCK):
        sims = left[start : start + _BLOCK] @ right.T
        i, j = np.nonzero(sims >= threshold)
        if len(i):
            yield i + start, j


def near_duplicates(
    frame: pd.DataFrame,
    prompts: np.ndarray,
    targets: np.ndarray,
    threshold: float,
) -> np.ndarray:
    """Drop an example whose prompt and target both nearly copy a stronger one's.

    Each row is compared with every row ranked above it and dropped when one is that
    close, kept or not; at a cosine of 0.95 chains of near copies are rare, and this
    keeps the stage one pass of blockwise matrix products instead of a sequential
    greedy walk.
    """
    order = priority_order(frame)
    rank = np.empty(len(frame), dtype=np.int64)
    rank[order] = np.arange(len(frame))
    keep = np.ones(len(frame), dtype=bool)
    for i, j in similar_pairs(prompts, prompts, threshold):
        earlier = rank[j] < rank[i]
        i, j = i[earlier], j[earlier]
        close = np.einsum("ij,ij->i", targets[i], targets[j]) >= threshold
        keep[i[close]] = False
    return keep


def decontaminate(
    frame: pd.DataFrame,
    prompts: np.ndarray,
    eval_prompts: list[str],
    eval_vectors: np.ndarray,
    threshold: float,
) -> np.ndarray:
    """Drop candidates whose prompt copies or nearly copies an evaluation prompt."""
    keep = np.ones(len(frame), dtype=bool)
    if not eval_prompts:
        return keep
    exact = {normalise(p) for p in eval_prompts}
    keep &= ~frame["prompt"].map(normalise).isin(exact).to_numpy()
    for i, _ in similar_pairs(prompts, eval_vectors, threshold):
        keep[i] = False
    return keep


def cap_per_user(frame: pd.DataFrame, limit: int) -> np.ndarray:
    """Keep each user's `limit` strongest examples; rows without a user are kept."""
    order = priority_order(frame)
    users = frame["user_hash"].to_numpy()[order]
    seen: Counter = Counter()
    keep = np.zeros(len(frame), dtype=bool)
    for position, user in zip(order, users, strict=True):
        if user is None or seen[user] < limit:
            keep[position] = True
        if user is not None:
            seen[user] += 1
    return keep


def balance_topics(frame: pd.DataFrame, max_share: float) -> np.ndarray:
    """Cap each topic at `max_share` of the rows; emerging-topic rows are never cut."""
    limit = max(1, int(max_share * len(frame)))
    order = priority_order(frame)
    topics = frame["topic"].fillna("unlabelled").to_numpy()[order]
    drift = frame["drift"].to_numpy(bool)[order]
    seen: Counter = Counter()
    keep = np.zeros(len(frame), dtype=bool)
    for position, topic, emerging in zip(order, topics, drift, strict=True):
        if emerging or seen[topic] < limit:
            keep[position] = True
        seen[topic] += 1
    return keep


def label_topics(frame: pd.DataFrame, prompts: np.ndarray, seed: int) -> pd.Series:
    """Fill missing topics with keyword-named clusters of the prompts."""
    from tasks.topics import keywords

    topics = frame["topic"].copy()
    missing = np.flatnonzero(topics.isna().to_numpy())
    if len(missing) < 2:
        return topics.fillna("unlabelled")
    from sklearn.cluster import KMeans

    k = int(np.clip(np.sqrt(len(missing) / 2), 2, 20))
    labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(
        prompts[missing]
    )
    groups = [np.flatnonzero(labels == c).tolist() for c in range(k)]
    words = keywords(frame["prompt"].iloc[missing].tolist(), groups, top=3)
    for group, group_words in zip(groups, words, strict=True):
        name = "-".join(group_words) or "unlabelled"
        topics.iloc[missing[group]] = name
    return topics


def counts(frame: pd.DataFrame, column: str) -> dict[str, Any]:
    """Counts of a column's values, largest first, for cards and logs."""
    return {str(k): int(v) for k, v in frame[column].value_counts().items()}
