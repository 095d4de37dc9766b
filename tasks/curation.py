"""Pick retraining candidates from a window of traffic, and the rows a person must see.

Sources, strongest signal first: a person's correction (the corrected answer becomes
the target), positive feedback, answers on an emerging topic that went well, and a
budgeted sample of answers with a high automated quality score. Negative feedback and
low scores never train unreviewed: they go to a review queue, and come back through
`driftloop curate --reviewed FILE` once a person approved or fixed them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop.errors import ConfigError
from tasks.datasets import user_hash
from tasks.signals import SUCCESS_OUTCOMES

SOURCES = ("correction", "reviewed", "feedback", "drift", "quality", "replay")
# When a cap must drop examples, the weakest evidence goes first.
SOURCE_PRIORITY = {name: rank for rank, name in enumerate(SOURCES)}
# What every filter stage reads; text stays raw until the PII stage scrubs it.
CANDIDATE_COLUMNS = [
    "request_id",
    "model",
    "timestamp",
    "session_id",
    "user_hash",
    "source",
    "topic",
    "drift",
    "conversation",
    "prompt",
    "target",
    "origin",
    "origin_line",
]
REVIEW_COLUMNS = [
    "request_id",
    "model",
    "timestamp",
    "session_id",
    "user_hash",
    "reason",
    "drift",
    "topic",
    "prompt",
    "response",
    "messages",
    "decision",
    "corrected_response",
    "origin",
    "origin_line",
]
DECISIONS = ("approve", "reject")


class CurateSettings(BaseSettings):
    """What enters a retraining dataset, and the thresholds of every filter."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_CURATE_", extra="ignore")

    score_field: str = Field(
        "quality_score",
        description=(
            "Metadata key of an automated quality score in [0, 1] (an online judge "
            "or reward model). Rows without it score 1 when their task outcome is a "
            "success, 0 when it is another outcome."
        ),
    )
    topic_field: str = Field(
        "topic",
        description="Metadata key naming a row's topic or intent, when logs carry one.",
    )
    min_quality_score: float = Field(
        0.8, ge=0, le=1, description="Score from which an answer counts as good."
    )
    low_quality_score: float = Field(
        0.3, ge=0, le=1, description="Score below which an answer goes to review."
    )
    quality_budget: int = Field(
        1000,
        ge=0,
        le=1_000_000,
        description="Most examples taken on score alone (they are plentiful).",
    )
    review_limit: int = Field(
        1000, ge=0, description="Most rows written to one review queue file."
    )
    replay_share: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of the dataset replayed from the parent version's train.",
    )
    min_chars: int = Field(8, ge=1, description="Shortest target kept, in characters.")
    max_chars: int = Field(
        4000, ge=16, description="Longest prompt or target kept, in characters."
    )
    languages: list[str] = Field(
        default_factory=list,
        description="ISO 639-1 codes kept (py3langid); empty keeps every language.",
    )
    near_duplicate: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Cosine of prompts and of targets above which two are one.",
    )
    decontamination: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Cosine to an evaluation prompt above which a candidate goes.",
    )
    split_similarity: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Prompt cosine from which two examples share a split group.",
    )
    max_per_user: int = Field(
        25, ge=1, description="Most examples one user may contribute to a version."
    )
    max_topic_share: float = Field(
        0.4,
        gt=0,
        le=1,
        description="Largest share one non-emerging topic may take of the dataset.",
    )
    validation_share: float = Field(
        0.1, gt=0, lt=0.5, description="Share of split groups held out for validation."
    )
    drift_validation_share: float = Field(
        0.25,
        gt=0,
        lt=0.5,
        description="Share of emerging-topic groups held out: the drift slice.",
    )
    pii_backend: str = Field(
        "auto", description="PII detectors: auto (Presidio when installed), regex."
    )
    seed: int = Field(0, description="Seed of every sample: reruns agree.")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that shape a dataset's content, for its version hash."""
        return self.model_dump()


def quality_scores(frame: pd.DataFrame, settings: CurateSettings) -> pd.Series:
    """A score in [0, 1] per row: the logged one, or one from the task outcome."""
    logged = _metadata_values(frame, settings.score_field)
    logged = pd.to_numeric(logged, errors="coerce").clip(0, 1)
    outcome = frame["task_outcome"].str.lower()
    proxy = pd.Series(np.nan, index=frame.index)
    proxy[outcome.notna()] = outcome[outcome.notna()].isin(SUCCESS_OUTCOMES) * 1.0
    return logged.fillna(proxy)


def topics_of(frame: pd.DataFrame, settings: CurateSettings) -> pd.Series:
    """The logged topic of each row, or None where the logs carry none."""
    return _metadata_values(frame, settings.topic_field).map(
        lambda v: None if v is None or v == "" else str(v)
    )


def _metadata_values(frame: pd.DataFrame, key: str) -> pd.Series:
    def get(text: Any) -> Any:
        if not isinstance(text, str) or key not in text:
            return None
        try:
            return json.loads(text).get(key)
        except (ValueError, AttributeError):
            return None

    return frame["metadata"].map(get)


def select(
    frame: pd.DataFrame,
    settings: CurateSettings,
    drift: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (candidates, review rows) from a window; `drift` marks emerging topics."""
    marks = np.zeros(len(frame), bool) if drift is None else np.asarray(drift, bool)
    # The mask travels with its rows through the canonical sort.
    frame = _lake_frame(frame).assign(_drift=marks)
    frame = frame.sort_values(["timestamp", "request_id"], kind="stable")
    frame = frame.reset_index(drop=True)
    drift = frame.pop("_drift").to_numpy(bool)
    score = quality_scores(frame, settings)
    corrected = frame["corrected_response"].fillna("").str.strip() != ""
    positive = frame["feedback"].eq(1).fillna(False).to_numpy(bool)
    negative = frame["feedback"].eq(-1).fillna(False).to_numpy(bool)
    good = (score >= settings.min_quality_score).to_numpy() & ~negative
    low = (score < settings.low_quality_score).to_numpy()

    source = pd.Series(pd.NA, index=frame.index, dtype="object")
    source[good] = "quality"
    source[good & drift] = "drift"
    source[positive & ~low] = "feedback"
    source[corrected] = "correction"

    # Score alone is weak evidence and abundant: take a seeded sample of it.
    plain = np.flatnonzero((source == "quality").to_numpy())
    if len(plain) > settings.quality_budget:
        rng = np.random.default_rng(settings.seed)
        keep = rng.choice(plain, size=settings.quality_budget, replace=False)
        source[np.setdiff1d(plain, keep)] = pd.NA

    chosen = frame[source.notna()].copy()
    chosen["source"] = source[source.notna()]
    chosen["drift"] = drift[source.notna().to_numpy()]
    chosen["target"] = np.where(
        chosen["source"] == "correction",
        chosen["corrected_response"],
        chosen["response"],
    )
    review = frame[(negative | low) & ~corrected.to_numpy()].copy()
    review["drift"] = drift[(negative | low) & ~corrected.to_numpy()]
    review["topic"] = topics_of(review, settings)
    review["reason"] = np.where(
        review["feedback"].eq(-1).fillna(False), "negative_feedback", "low_score"
    )
    return _candidates(chosen, settings), review


def _candidates(frame: pd.DataFrame, settings: CurateSettings) -> pd.DataFrame:
    """The candidate columns every later stage reads; text is still raw here."""
    conversations = [
        [{"role": m["role"], "content": m["content"] or ""} for m in messages]
        for messages in frame["messages"]
    ]
    return pd.DataFrame(
        {
            "request_id": frame["request_id"].to_numpy(),
            "model": frame["model"].to_numpy(),
            "timestamp": frame["timestamp"].to_numpy(),
            "session_id": frame["session_id"].fillna(frame["request_id"]).to_numpy(),
            "user_hash": frame["user_id"].map(user_hash).to_numpy(),
            "source": frame["source"].to_numpy(),
            "topic": topics_of(frame, settings).to_numpy(),
            "drift": frame["drift"].to_numpy(bool),
            "conversation": conversations,
            "prompt": frame["prompt"].fillna("").to_numpy(),
            "target": frame["target"].fillna("").to_numpy(),
            "origin": frame["origin"].to_numpy(),
            "origin_line": frame["source_line"].to_numpy(),
        }
    )


# The lake's `source` column (the object) is called `origin` in a dataset, because a
# dataset's `source` names the evidence an example came from.
def _lake_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={"source": "origin"})


def review_queue(review: pd.DataFrame, scrub, limit: int) -> pd.DataFrame:
    """The rows a person should look at first, scrubbed, with empty decision columns."""
    if review.empty:
        return pd.DataFrame(columns=REVIEW_COLUMNS)
    review = review.assign(
        _rank=(~review["drift"]).astype(int) * 2
        + (review["reason"] != "negative_feedback").astype(int)
    ).sort_values(["_rank", "timestamp", "request_id"], kind="stable")
    review = review.head(limit)
    messages = [
        json.dumps(
            [{"role": m["role"], "content": scrub(m["content"] or "")} for m in row],
            ensure_ascii=False,
        )
        for row in review["messages"]
    ]
    return pd.DataFrame(
        {
            "request_id": review["request_id"].to_numpy(),
            "model": review["model"].to_numpy(),
            "timestamp": review["timestamp"].to_numpy(),
            "session_id": review["session_id"].to_numpy(),
            "user_hash": review["user_id"].map(user_hash).to_numpy(),
            "reason": review["reason"].to_numpy(),
            "drift": review["drift"].to_numpy(bool),
            "topic": review["topic"].to_numpy(),
            "prompt": review["prompt"].fillna("").map(scrub).to_numpy(),
            "response": review["response"].fillna("").map(scrub).to_numpy(),
            "messages": messages,
            "decision": "",
            "corrected_response": "",
            "origin": review["origin"].to_numpy(),
            "origin_line": review["source_line"].to_numpy(),
        }
    )[REVIEW_COLUMNS]


def queue_id(queue: pd.DataFrame) -> str:
    """Name a queue file after its rows, so a rerun rewrites the same file."""
    ids = "\n".join(sorted(queue["request_id"].astype(str)))
    return hashlib.sha256(ids.encode()).hexdigest()[:12]


def read_reviewed(path: Path, settings: CurateSettings) -> pd.DataFrame:
    """Approved rows of a labelled review file, as candidates of source `reviewed`."""
    if not path.is_file():
        raise ConfigError(f"reviewed file {path} does not exist")
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
    elif path.suffix == ".csv":
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    else:
        raise ConfigError(
            f"reviewed file {path} is neither .csv nor .parquet; label the review "
            "queue file driftloop wrote and pass it back"
        )
    missing = [c for c in REVIEW_COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(
            f"reviewed file {path} lacks columns {missing}; expected the review "
            f"queue's columns {REVIEW_COLUMNS}"
        )
    decisions = table["decision"].fillna("").astype(str).str.strip().str.lower()
    bad = table.index[~decisions.isin((*DECISIONS, ""))]
    if len(bad):
        raise ConfigError(
            f"reviewed file {path}: rows {[int(i) + 2 for i in bad[:5]]} have "
            f"decision {table.loc[bad[0], 'decision']!r}; expected 'approve', "
            "'reject' or empty (not reviewed yet)"
        )
    approved = table[decisions == "approve"]
    fixed = approved["corrected_response"].fillna("").astype(str).str.strip()
    conversations = [json.loads(m) for m in approved["messages"]]
    return pd.DataFrame(
        {
            "request_id": approved["request_id"].astype(str).to_numpy(),
            "model": approved["model"].to_numpy(),
            "timestamp": pd.to_datetime(approved["timestamp"], utc=True).to_numpy(),
            "session_id": approved["session_id"].astype(str).to_numpy(),
            "user_hash": approved["user_hash"].replace("", None).to_numpy(),
            "source": "reviewed",
            "topic": approved["topic"].replace("", None).to_numpy(),
            "drift": approved["drift"].astype(str).str.lower().isin(["true", "1"]),
            "conversation": conversations,
            "prompt": approved["prompt"].astype(str).to_numpy(),
            "target": np.where(fixed != "", fixed, approved["response"].astype(str)),
            "origin": approved["origin"].astype(str).to_numpy(),
            "origin_line": pd.to_numeric(approved["origin_line"]).to_numpy(),
        }
    ).reset_index(drop=True)
