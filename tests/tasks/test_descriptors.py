"""Response descriptors flag what they should, through Evidently, without raw PII."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.descriptors import DESCRIPTORS, describe, descriptor_shares
from tasks.tabular_drift import tabular_drift


def frame(responses, prompts=None, metadata=None):
    prompts = prompts or ["How do I reset the password on my account please?"] * len(
        responses
    )
    return pd.DataFrame(
        {
            "prompt": prompts,
            "response": responses,
            "metadata": metadata or [None] * len(responses),
        }
    )


@pytest.fixture(scope="module")
def described():
    responses = [
        "Open Settings, choose Security and click Reset password.",
        "I'm sorry, I can't help with that.",
        "",
        "To reset it open the settings page and then",
        "reset reset reset reset reset reset reset reset reset reset",
        "Para restablecer la contraseña abre la configuración de tu cuenta.",
        "Sure, I emailed the link to jane.doe@example.com just now.",
    ]
    return describe(frame(responses))


def test_every_descriptor_is_a_column(described):
    assert list(described.columns) == DESCRIPTORS


def test_a_plain_answer_flags_nothing(described):
    row = described.iloc[0]
    assert not row["refusal"] and not row["empty"] and not row["truncated"]
    assert not row["language_mismatch"] and not row["pii_echo"]


def test_a_refusal_is_flagged_by_evidently_phrase_matching(described):
    assert described["refusal"].tolist()[1] is True


def test_an_empty_answer_is_flagged(described):
    assert described.iloc[2]["empty"]


def test_an_answer_cut_mid_sentence_is_truncated(described):
    assert described.iloc[3]["truncated"]


def test_a_looping_answer_scores_high_repetition(described):
    assert described.iloc[4]["repetition"] > 0.8
    assert described.iloc[0]["repetition"] == 0


def test_an_answer_in_another_language_than_the_prompt_is_a_mismatch(described):
    assert described.iloc[5]["language_mismatch"]


def test_pii_echoed_in_an_answer_is_flagged(described):
    assert described.iloc[6]["pii_echo"]


def test_a_length_finish_reason_marks_an_answer_truncated():
    out = describe(
        frame(["Complete sentence."], metadata=['{"finish_reason":"length"}'])
    )
    assert out.iloc[0]["truncated"]


def test_window_shares_are_fractions_of_flagged_answers(described):
    shares = descriptor_shares(described)
    assert shares["empty_share"] == pytest.approx(1 / 7)
    assert shares["refusal_share"] == pytest.approx(1 / 7)
    assert "response_length_mean" in shares


def test_tabular_drift_flags_a_refusal_surge_and_writes_html_without_text(tmp_path):
    ok = ["Open Settings and click Reset password."] * 150
    reference = frame(ok + ["I'm sorry, I can't help with that."] * 5)
    current = frame(ok[:100] + ["I'm sorry, I can't help with that."] * 55)
    ref = pd.concat([reference, describe(reference)], axis=1).assign(latency_ms=500.0)
    cur = pd.concat([current, describe(current)], axis=1).assign(latency_ms=500.0)
    html = tmp_path / "report.html"
    report = tabular_drift(ref, cur, html)
    assert report["columns"]["refusal"]["drift"] is True
    assert report["drifted_columns"] >= 1
    assert (
        html.exists()
        and "I&#39;m sorry" not in html.read_text()
        and "Open Settings" not in html.read_text()
    )
    assert "prompt_tokens" in report["unavailable"]


def test_descriptors_follow_the_rows_whatever_the_input_index():
    rows = frame(["Open Settings and choose Security.", "", "Click Reset password."])
    shuffled = rows.set_axis([10, 4, 7])
    assert describe(shuffled)["empty"].tolist() == [False, True, False]
