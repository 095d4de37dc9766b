"""Choosing retraining candidates from a window, and the review queue round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftloop.errors import ConfigError
from driftloop.schema import COLUMNS
from tasks.curation import (
    REVIEW_COLUMNS,
    CurateSettings,
    quality_scores,
    read_reviewed,
    review_queue,
    select,
    topics_of,
)
from tasks.datasets import user_hash
from tasks.pii import scrub

START = pd.Timestamp("2026-11-02 09:00", tz="UTC")


def interaction(request_id: str, minute: int = 0, **fields: Any) -> dict[str, Any]:
    """One lake row that the proxy scores as good: a resolved answer, no feedback."""
    prompt = fields.pop("prompt", f"Where is my parcel {request_id}?")
    row = {
        "request_id": request_id,
        "timestamp": START + pd.Timedelta(minutes=minute),
        "model": "support-assistant",
        "model_version": "v1",
        "messages": [
            {"role": "system", "content": "You are a helpful support agent."},
            {"role": "user", "content": prompt},
        ],
        "prompt": prompt,
        "response": f"Your parcel {request_id} arrives tomorrow.",
        "latency_ms": 420.0,
        "prompt_tokens": 12,
        "completion_tokens": 9,
        "feedback": np.nan,
        "feedback_comment": None,
        "corrected_response": None,
        "task_outcome": "resolved",
        "session_id": f"session-{request_id}",
        "user_id": f"user-{request_id}",
        "metadata": None,
        "source": "s3://logs/2026-11-02.jsonl",
        "source_line": minute + 1,
    }
    return row | fields


def lake(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def meta(**values: Any) -> str:
    return json.dumps(values)


def by_id(candidates: pd.DataFrame) -> dict[str, pd.Series]:
    return {row["request_id"]: row for _, row in candidates.iterrows()}


SETTINGS = CurateSettings()


# --- select -------------------------------------------------------------------------


class TestSelect:
    def test_a_correction_becomes_the_target_even_with_negative_feedback(self) -> None:
        frame = lake(
            interaction("r1", feedback=-1, corrected_response="It ships on Monday.")
        )
        candidates, review = select(frame, SETTINGS)
        (row,) = candidates.itertuples()
        assert row.source == "correction"
        assert row.target == "It ships on Monday."
        assert review.empty

    def test_a_blank_correction_is_no_correction(self) -> None:
        frame = lake(interaction("r1", feedback=-1, corrected_response="   "))
        candidates, review = select(frame, SETTINGS)
        assert candidates.empty
        assert review["reason"].tolist() == ["negative_feedback"]

    def test_positive_feedback_trains_on_the_model_answer_as_feedback(self) -> None:
        frame = lake(interaction("r1", feedback=1, task_outcome=None))
        candidates, _ = select(frame, SETTINGS)
        (row,) = candidates.itertuples()
        assert row.source == "feedback"
        assert row.target == "Your parcel r1 arrives tomorrow."

    def test_positive_feedback_on_a_low_score_goes_to_review_not_training(
        self,
    ) -> None:
        frame = lake(interaction("r1", feedback=1, task_outcome="escalated"))
        candidates, review = select(frame, SETTINGS)
        assert candidates.empty
        assert review["reason"].tolist() == ["low_score"]

    def test_negative_feedback_goes_to_review_and_never_becomes_a_candidate(
        self,
    ) -> None:
        frame = lake(interaction("r1", feedback=-1, task_outcome="resolved"))
        candidates, review = select(frame, SETTINGS)
        assert candidates.empty
        assert review["request_id"].tolist() == ["r1"]
        assert review["reason"].tolist() == ["negative_feedback"]

    def test_negative_feedback_on_a_drift_row_still_never_becomes_a_candidate(
        self,
    ) -> None:
        frame = lake(interaction("r1", feedback=-1))
        candidates, review = select(frame, SETTINGS, drift=np.array([True]))
        assert candidates.empty
        assert review["drift"].tolist() == [True]

    def test_a_low_score_goes_to_review_with_reason_low_score(self) -> None:
        frame = lake(interaction("r1", task_outcome="escalated"))
        candidates, review = select(frame, SETTINGS)
        assert candidates.empty
        assert review["reason"].tolist() == ["low_score"]

    def test_a_score_between_the_two_thresholds_neither_trains_nor_is_reviewed(
        self,
    ) -> None:
        frame = lake(interaction("r1", metadata=meta(quality_score=0.5)))
        candidates, review = select(frame, SETTINGS)
        assert candidates.empty
        assert review.empty

    @pytest.mark.parametrize(
        ("score", "candidate", "reviewed"),
        [
            (0.8, True, False),
            (0.79, False, False),
            (0.3, False, False),
            (0.29, False, True),
        ],
    )
    def test_good_starts_at_min_quality_score_and_review_below_low_quality_score(
        self, score: float, candidate: bool, reviewed: bool
    ) -> None:
        frame = lake(interaction("r1", metadata=meta(quality_score=score)))
        candidates, review = select(frame, SETTINGS)
        assert (len(candidates) == 1) is candidate
        assert (len(review) == 1) is reviewed

    def test_a_logged_low_score_overrides_a_successful_outcome(self) -> None:
        frame = lake(
            interaction("r1", task_outcome="resolved", metadata=meta(quality_score=0.1))
        )
        candidates, review = select(frame, SETTINGS)
        assert candidates.empty
        assert review["reason"].tolist() == ["low_score"]

    def test_a_logged_high_score_overrides_a_failed_outcome(self) -> None:
        frame = lake(
            interaction(
                "r1", task_outcome="escalated", metadata=meta(quality_score=0.95)
            )
        )
        candidates, review = select(frame, SETTINGS)
        assert candidates["source"].tolist() == ["quality"]
        assert review.empty

    def test_the_quality_budget_caps_score_only_candidates(self) -> None:
        frame = lake(*(interaction(f"r{i:02d}", i) for i in range(20)))
        settings = CurateSettings(quality_budget=5)
        candidates, _ = select(frame, settings)
        assert candidates["source"].tolist() == ["quality"] * 5

    def test_the_quality_sample_is_the_same_on_every_run_with_one_seed(self) -> None:
        frame = lake(*(interaction(f"r{i:02d}", i) for i in range(20)))
        settings = CurateSettings(quality_budget=5, seed=7)
        first, _ = select(frame, settings)
        again, _ = select(frame.sample(frac=1, random_state=3), settings)
        assert first["request_id"].tolist() == again["request_id"].tolist()

    def test_another_seed_draws_another_quality_sample(self) -> None:
        frame = lake(*(interaction(f"r{i:02d}", i) for i in range(20)))
        drawn = {
            tuple(
                select(frame, CurateSettings(quality_budget=5, seed=s))[0]["request_id"]
            )
            for s in range(4)
        }
        assert len(drawn) > 1

    def test_the_quality_budget_spares_corrections_feedback_and_drift(self) -> None:
        frame = lake(
            interaction("c", 0, corrected_response="Fixed answer here."),
            interaction("f", 1, feedback=1),
            interaction("d", 2),
            interaction("q", 3),
        )
        drift = np.array([False, False, True, False])
        candidates, _ = select(frame, CurateSettings(quality_budget=0), drift)
        assert dict(
            zip(candidates["request_id"], candidates["source"], strict=True)
        ) == {
            "c": "correction",
            "f": "feedback",
            "d": "drift",
        }

    def test_a_drift_mask_turns_good_rows_into_drift_candidates(self) -> None:
        frame = lake(interaction("a", 0), interaction("b", 1))
        candidates, _ = select(frame, SETTINGS, np.array([True, False]))
        rows = by_id(candidates)
        assert (rows["a"]["source"], rows["a"]["drift"]) == ("drift", True)
        assert (rows["b"]["source"], rows["b"]["drift"]) == ("quality", False)

    def test_a_drift_mask_marks_the_rows_it_was_given_for_in_any_row_order(
        self,
    ) -> None:
        # The mask is positional over the frame as passed; select sorts by time.
        frame = lake(interaction("late", 5), interaction("early", 0))
        candidates, _ = select(frame, SETTINGS, np.array([True, False]))
        rows = by_id(candidates)
        assert rows["late"]["source"] == "drift"
        assert rows["early"]["source"] == "quality"

    def test_candidates_carry_the_user_pseudonym_session_and_origin(self) -> None:
        frame = lake(interaction("r1", 0, session_id=None, source_line=17))
        (row,) = select(frame, SETTINGS)[0].itertuples()
        assert row.user_hash == user_hash("user-r1")
        assert row.session_id == "r1"
        assert (row.origin, row.origin_line) == ("s3://logs/2026-11-02.jsonl", 17)
        assert row.conversation[-1] == {
            "role": "user",
            "content": "Where is my parcel r1?",
        }

    def test_an_empty_window_gives_no_candidates_and_no_review_rows(self) -> None:
        candidates, review = select(pd.DataFrame(columns=COLUMNS), SETTINGS)
        assert candidates.empty
        assert review.empty

    def test_candidates_take_their_topic_from_the_metadata(self) -> None:
        frame = lake(interaction("r1", metadata=meta(topic="billing")))
        assert select(frame, SETTINGS)[0]["topic"].tolist() == ["billing"]


# --- quality_scores and topics_of ---------------------------------------------------


class TestQualityScores:
    def test_a_success_outcome_scores_one_in_any_case_and_others_zero(self) -> None:
        frame = lake(
            interaction("a", task_outcome="Resolved"),
            interaction("b", task_outcome="escalated"),
        )
        assert quality_scores(frame, SETTINGS).tolist() == [1.0, 0.0]

    def test_a_row_without_outcome_or_logged_score_has_no_score(self) -> None:
        frame = lake(interaction("a", task_outcome=None))
        assert quality_scores(frame, SETTINGS).isna().tolist() == [True]

    def test_a_logged_score_is_clipped_into_zero_to_one(self) -> None:
        frame = lake(
            interaction("a", metadata=meta(quality_score=1.7)),
            interaction("b", metadata=meta(quality_score=-0.2)),
        )
        assert quality_scores(frame, SETTINGS).tolist() == [1.0, 0.0]

    @pytest.mark.parametrize(
        "metadata",
        ['{"quality_score": 0.1', meta(quality_score="high"), '["quality_score"]'],
        ids=["broken-json", "not-a-number", "not-an-object"],
    )
    def test_an_unreadable_logged_score_falls_back_to_the_outcome(
        self, metadata: str
    ) -> None:
        frame = lake(interaction("a", task_outcome="resolved", metadata=metadata))
        assert quality_scores(frame, SETTINGS).tolist() == [1.0]

    def test_the_score_field_setting_names_the_metadata_key(self) -> None:
        frame = lake(interaction("a", metadata=meta(judge=0.25, quality_score=0.9)))
        settings = CurateSettings(score_field="judge")
        assert quality_scores(frame, settings).tolist() == [0.25]


class TestTopicsOf:
    def test_a_logged_topic_is_returned_as_text(self) -> None:
        frame = lake(
            interaction("a", metadata=meta(topic="billing")),
            interaction("b", metadata=meta(topic=7)),
        )
        assert topics_of(frame, SETTINGS).tolist() == ["billing", "7"]

    def test_rows_without_a_topic_get_none(self) -> None:
        frame = lake(
            interaction("a", metadata=None),
            interaction("b", metadata=meta(topic="")),
            interaction("c", metadata=meta(other="x")),
        )
        assert topics_of(frame, SETTINGS).tolist() == [None, None, None]

    def test_the_topic_field_setting_names_the_metadata_key(self) -> None:
        frame = lake(interaction("a", metadata=meta(intent="refund", topic="x")))
        settings = CurateSettings(topic_field="intent")
        assert topics_of(frame, settings).tolist() == ["refund"]


# --- review_queue -------------------------------------------------------------------


def review_rows(*rows: dict[str, Any], drift: list[bool] | None = None) -> pd.DataFrame:
    mask = np.array(drift) if drift is not None else None
    return select(lake(*rows), SETTINGS, mask)[1]


class TestReviewQueue:
    def test_pii_is_scrubbed_from_prompt_response_and_messages(self) -> None:
        prompt = "I am jane.doe@example.com, call +44 20 7946 0958"
        review = review_rows(
            interaction(
                "r1",
                feedback=-1,
                prompt=prompt,
                response="Card 4111 1111 1111 1111 was charged.",
            )
        )
        (row,) = review_queue(review, scrub, 10).itertuples()
        assert row.prompt == "I am <EMAIL>, call <PHONE>"
        assert row.response == "Card <CARD> was charged."
        assert json.loads(row.messages)[-1] == {
            "role": "user",
            "content": "I am <EMAIL>, call <PHONE>",
        }
        assert "jane.doe" not in row.messages

    def test_drift_rows_come_first_then_negative_feedback_then_oldest(self) -> None:
        review = review_rows(
            interaction("plain-low", 0, task_outcome="escalated"),
            interaction("plain-negative", 1, feedback=-1),
            interaction("drift-low", 2, task_outcome="escalated"),
            interaction("drift-negative", 3, feedback=-1),
            interaction("plain-low-later", 4, task_outcome="escalated"),
            drift=[False, False, True, True, False],
        )
        queue = review_queue(review, scrub, 10)
        assert queue["request_id"].tolist() == [
            "drift-negative",
            "drift-low",
            "plain-negative",
            "plain-low",
            "plain-low-later",
        ]

    def test_the_limit_keeps_only_the_first_rows(self) -> None:
        review = review_rows(*(interaction(f"r{i}", i, feedback=-1) for i in range(5)))
        queue = review_queue(review, scrub, 2)
        assert queue["request_id"].tolist() == ["r0", "r1"]

    def test_an_empty_review_gives_an_empty_queue_with_the_review_columns(
        self,
    ) -> None:
        queue = review_queue(review_rows(interaction("ok")), scrub, 10)
        assert queue.empty
        assert list(queue.columns) == REVIEW_COLUMNS

    def test_a_queue_has_the_review_columns_empty_decisions_and_pseudonyms(
        self,
    ) -> None:
        queue = review_queue(review_rows(interaction("r1", feedback=-1)), scrub, 10)
        assert list(queue.columns) == REVIEW_COLUMNS
        row = queue.iloc[0]
        assert (row["decision"], row["corrected_response"]) == ("", "")
        assert row["user_hash"] == user_hash("user-r1")
        assert "user-r1" not in queue.to_csv()


# --- read_reviewed ------------------------------------------------------------------


def labelled_queue(tmp_path: Path, decisions: dict[str, tuple[str, str]]) -> Path:
    """Write a review queue as CSV with (decision, corrected_response) per request."""
    review = review_rows(
        *(interaction(rid, i, feedback=-1) for i, rid in enumerate(decisions)),
        drift=[rid.startswith("drift") for rid in decisions],
    )
    queue = review_queue(review, scrub, 100)
    for rid, (decision, fixed) in decisions.items():
        queue.loc[queue["request_id"] == rid, ["decision", "corrected_response"]] = [
            decision,
            fixed,
        ]
    path = tmp_path / "queue.csv"
    queue.to_csv(path, index=False)
    return path


class TestReadReviewed:
    def test_an_approved_row_with_a_correction_trains_on_the_correction(
        self, tmp_path: Path
    ) -> None:
        path = labelled_queue(tmp_path, {"r1": ("approve", "It ships Monday.")})
        (row,) = read_reviewed(path, SETTINGS).itertuples()
        assert (row.source, row.target) == ("reviewed", "It ships Monday.")

    def test_an_approved_row_without_a_correction_trains_on_the_response(
        self, tmp_path: Path
    ) -> None:
        path = labelled_queue(tmp_path, {"r1": ("approve", "")})
        (row,) = read_reviewed(path, SETTINGS).itertuples()
        assert row.target == "Your parcel r1 arrives tomorrow."

    def test_rejected_and_unreviewed_rows_are_skipped(self, tmp_path: Path) -> None:
        path = labelled_queue(
            tmp_path,
            {"keep": ("approve", ""), "no": ("reject", "x"), "later": ("", "")},
        )
        assert read_reviewed(path, SETTINGS)["request_id"].tolist() == ["keep"]

    def test_decisions_are_read_regardless_of_case_and_spaces(
        self, tmp_path: Path
    ) -> None:
        path = labelled_queue(tmp_path, {"r1": (" Approve ", "")})
        assert read_reviewed(path, SETTINGS)["request_id"].tolist() == ["r1"]

    def test_an_approved_row_keeps_its_conversation_drift_and_origin(
        self, tmp_path: Path
    ) -> None:
        path = labelled_queue(tmp_path, {"drift-1": ("approve", "")})
        (row,) = read_reviewed(path, SETTINGS).itertuples()
        assert row.conversation[-1] == {
            "role": "user",
            "content": "Where is my parcel drift-1?",
        }
        assert row.drift
        assert row.user_hash == user_hash("user-drift-1")
        assert (row.origin, row.origin_line) == ("s3://logs/2026-11-02.jsonl", 1)
        assert row.timestamp == START

    def test_a_parquet_queue_is_read_like_a_csv_one(self, tmp_path: Path) -> None:
        csv = labelled_queue(tmp_path, {"r1": ("approve", "It ships Monday.")})
        parquet = tmp_path / "queue.parquet"
        pd.read_csv(csv, dtype=str, keep_default_na=False).to_parquet(parquet)
        assert read_reviewed(parquet, SETTINGS)["target"].tolist() == [
            "It ships Monday."
        ]

    def test_a_missing_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "nowhere.csv"
        with pytest.raises(ConfigError, match=rf"reviewed file {path} does not exist"):
            read_reviewed(path, SETTINGS)

    def test_a_file_that_is_not_csv_or_parquet_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "queue.json"
        path.write_text("[]")
        with pytest.raises(
            ConfigError, match=r"is neither \.csv nor \.parquet; label the review queue"
        ):
            read_reviewed(path, SETTINGS)

    def test_a_file_lacking_queue_columns_is_refused_naming_them(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "queue.csv"
        pd.DataFrame({"request_id": ["r1"], "prompt": ["hi"]}).to_csv(path, index=False)
        with pytest.raises(
            ConfigError,
            match=r"lacks columns \['model', 'timestamp'.*'decision'.*expected the review "
            r"queue's columns",
        ):
            read_reviewed(path, SETTINGS)

    def test_an_unknown_decision_is_refused_naming_its_row_and_value(
        self, tmp_path: Path
    ) -> None:
        path = labelled_queue(
            tmp_path, {"r1": ("approve", ""), "r2": ("maybe", ""), "r3": ("", "")}
        )
        with pytest.raises(
            ConfigError,
            match=r"rows \[3\] have decision 'maybe'; expected 'approve', 'reject' or "
            r"empty \(not reviewed yet\)",
        ):
            read_reviewed(path, SETTINGS)
