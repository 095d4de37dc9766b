"""The canary verdict over tiny windows: metrics, intervals, thresholds, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tasks.canary import (
    CanarySettings,
    Verdict,
    decide,
    judge,
    latency_change,
    metrics,
    newcombe_difference,
    serving_label,
    split_arms,
)
from tasks.registry import Version
from tasks.signals import share

CANARY, CHAMPION = "assistant/2", "assistant/1"


def _arm(
    label: str,
    n: int,
    thumbs_down: int = 0,
    rated: int | None = None,
    corrected: int = 0,
    resolved: int | None = None,
    latency: float = 800.0,
) -> pd.DataFrame:
    """`n` interactions of one version; the first ones carry the events counted."""
    rated = n if rated is None else rated
    resolved = n if resolved is None else resolved
    feedback = [-1] * thumbs_down + [1] * (rated - thumbs_down) + [None] * (n - rated)
    return pd.DataFrame(
        {
            "model_version": label,
            "feedback": pd.array(feedback, dtype="Int8"),
            "corrected_response": ["fixed"] * corrected + [None] * (n - corrected),
            "task_outcome": ["resolved"] * resolved + ["escalated"] * (n - resolved),
            "latency_ms": latency + np.arange(n, dtype=float) % 50,
        }
    )


def _window(canary: pd.DataFrame, champion: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([canary, champion], ignore_index=True)


def _decide(canary: pd.DataFrame, champion: pd.DataFrame, **settings) -> Verdict:
    arms = split_arms(_window(canary, champion), CANARY, CHAMPION)
    return decide(arms, CanarySettings(resamples=500, **settings))


def _row(verdict: Verdict, metric: str):
    return next(c for c in verdict.comparisons if c.metric == metric)


class TestIntervals:
    @pytest.mark.parametrize(
        ("canary", "champion", "expected"),
        [
            # Newcombe (1998), table II, method 10.
            ((56, 70), (48, 80), (0.2, 0.0524, 0.3339)),
            ((9, 10), (3, 10), (0.6, 0.1705, 0.8090)),
            ((5, 56), (0, 29), (0.0893, -0.0381, 0.1926)),
        ],
    )
    def test_the_difference_of_shares_matches_newcombes_published_intervals(
        self, canary, champion, expected
    ):
        found = newcombe_difference(share(*canary), share(*champion))
        assert found == pytest.approx(expected, abs=1e-4)

    def test_the_latency_change_is_the_ratio_of_medians_less_one(self):
        champion = np.linspace(500, 1500, 401)
        change, low, high = latency_change(champion * 1.2, champion, 500, seed=0)
        assert change == pytest.approx(0.2)
        assert low < 0.2 < high
        assert high - low < 0.25

    def test_the_latency_interval_is_the_same_on_a_rerun_with_the_seed(self):
        rng = np.random.default_rng(3)
        canary, champion = rng.lognormal(6.7, 0.35, 300), rng.lognormal(6.7, 0.35, 300)
        first = latency_change(canary, champion, 500, seed=1)
        assert latency_change(canary, champion, 500, seed=1) == first
        assert first[1] < first[0] < first[2]


class TestArms:
    def test_the_window_is_split_by_serving_label_and_other_labels_are_counted(self):
        frame = _window(_arm(CANARY, 3), _arm(CHAMPION, 5))
        frame = pd.concat([frame, _arm("assistant/0", 2)], ignore_index=True)
        frame.loc[9, "model_version"] = None
        arms = split_arms(frame, CANARY, CHAMPION)
        assert (len(arms.canary), len(arms.champion)) == (3, 5)
        assert arms.others == {"assistant/0": 1, "(none)": 1}
        assert arms.canary_share() == pytest.approx(3 / 8)

    def test_a_version_logs_its_serving_label_tag_else_name_and_number(self):
        def version(**tags: str) -> Version:
            return Version("driftloop-support", "3", "adapter", "", None, tags, [])

        assert serving_label(version()) == "driftloop-support/3"
        assert serving_label(version(serving_label="lora-blue")) == "lora-blue"


class TestMetrics:
    def test_each_metric_counts_what_the_signals_count(self):
        canary = _arm(CANARY, 200, thumbs_down=10, rated=40, corrected=6, resolved=150)
        verdict = _decide(canary, _arm(CHAMPION, 200))
        rows = {c.metric: (c.canary, c.n_canary) for c in verdict.comparisons}
        assert rows == {
            "thumbs_down_share": (0.25, 40),
            "correction_rate": (0.03, 200),
            "task_success": (0.75, 200),
            "latency_p50": (pytest.approx(824.5), 200),
        }

    def test_the_figures_become_flat_mlflow_metrics_per_metric_and_arm(self):
        canary, champion = _arm(CANARY, 150), _arm(CHAMPION, 250)
        arms = split_arms(_window(canary, champion), CANARY, CHAMPION)
        verdict = decide(arms, CanarySettings(resamples=500))
        figures = metrics(verdict, arms)
        assert figures["interactions.canary"] == 150
        assert figures["canary_share"] == pytest.approx(150 / 400)
        assert figures["task_success.n_champion"] == 250
        assert {"task_success.low", "latency_p50.high"} <= set(figures)


class TestVerdict:
    def test_a_clearly_worse_metric_rolls_back_naming_its_interval(self):
        verdict = _decide(
            _arm(CANARY, 200, resolved=100), _arm(CHAMPION, 200, resolved=180)
        )
        _, low, high = newcombe_difference(share(100, 200), share(180, 200))
        assert verdict.decision == "rollback"
        assert verdict.reasons == [
            f"task_success: difference -40.0 points, 95% interval [{100 * low:+.1f}, "
            f"{100 * high:+.1f}], wholly beyond the tolerance of -3.0 points"
        ]

    def test_a_slower_canary_rolls_back_on_its_median_latency(self):
        verdict = _decide(_arm(CANARY, 200, latency=1200), _arm(CHAMPION, 200))
        assert verdict.decision == "rollback"
        assert verdict.reasons[0].startswith("latency_p50: median latency change +48")
        assert _row(verdict, "latency_p50").status == "harmful"

    def test_every_metric_within_its_tolerance_on_enough_samples_promotes(self):
        verdict = _decide(_arm(CANARY, 2000), _arm(CHAMPION, 2000))
        assert verdict.decision == "promote"
        assert {c.status for c in verdict.comparisons} == {"non-inferior"}

    def test_too_few_samples_of_one_metric_waits_naming_the_minimum(self):
        verdict = _decide(_arm(CANARY, 2000, rated=60), _arm(CHAMPION, 2000))
        assert verdict.decision == "wait"
        assert verdict.reasons == [
            "thumbs_down_share: the canary has 60 rated answers, fewer than the 100 "
            "a pass needs (DRIFTLOOP_CANARY_MIN_SAMPLES)"
        ]

    def test_an_interval_reaching_past_the_tolerance_waits_for_more_traffic(self):
        verdict = _decide(
            _arm(CANARY, 150, resolved=140), _arm(CHAMPION, 150, resolved=140)
        )
        assert verdict.decision == "wait"
        reason = next(r for r in verdict.reasons if r.startswith("task_success"))
        assert reason.startswith("task_success: difference +0.0 points")
        assert reason.endswith(
            ", reaching beyond the tolerance of -3.0 points, so the canary is not yet "
            "shown to be no worse; more traffic narrows the interval"
        )

    def test_harm_on_fewer_samples_than_the_rollback_floor_waits(self):
        verdict = _decide(
            _arm(CANARY, 20, resolved=0), _arm(CHAMPION, 2000), min_samples_harm=30
        )
        assert verdict.decision == "wait"
        reason = next(r for r in verdict.reasons if r.startswith("task_success"))
        assert reason.endswith(
            ", beyond the tolerance of -3.0 points, but the canary has only 20 answers "
            "with an outcome; a rollback needs 30 (DRIFTLOOP_CANARY_MIN_SAMPLES_HARM)"
        )

    def test_a_canary_that_logs_nothing_waits_and_says_which_label_to_log(self):
        arms = split_arms(_arm(CHAMPION, 500), CANARY, CHAMPION)
        verdict = decide(arms, CanarySettings())
        assert verdict.decision == "wait"
        assert verdict.reasons == [
            "no interaction in the window logs model_version 'assistant/2', the "
            "canary's serving label; log that label for its answers or set tag "
            "serving_label on the version to the label it logs"
        ]

    def test_a_metric_neither_arm_logs_waits_and_says_to_log_it_or_leave_it_out(self):
        verdict = _decide(_arm(CANARY, 500, rated=0), _arm(CHAMPION, 500, rated=0))
        assert verdict.decision == "wait"
        assert verdict.reasons == [
            "thumbs_down_share: neither arm logged feedback in the window; log it, "
            "or leave the metric out of DRIFTLOOP_CANARY_METRICS"
        ]

    def test_a_metric_left_out_of_the_settings_is_not_needed_to_promote(self):
        verdict = _decide(
            _arm(CANARY, 2000, rated=0),
            _arm(CHAMPION, 2000, rated=0),
            metrics=["correction_rate", "task_success", "latency_p50"],
        )
        assert verdict.decision == "promote"
        assert len(verdict.comparisons) == 3


class TestThresholds:
    settings = CanarySettings()

    @pytest.mark.parametrize(
        ("high", "status"), [(0.05, "non-inferior"), (0.0501, "undecided")]
    )
    def test_an_upper_end_at_the_tolerance_passes_and_just_above_does_not(
        self, high, status
    ):
        interval = (0.0, -0.02, high)
        assert judge("thumbs_down_share", [500, 500], interval, self.settings)[0] == (
            status
        )

    @pytest.mark.parametrize(
        ("low", "status"), [(0.0201, "harmful"), (0.02, "undecided")]
    )
    def test_a_lower_end_above_the_tolerance_is_harm_and_at_it_is_not(
        self, low, status
    ):
        interval = (0.04, low, 0.06)
        assert judge("correction_rate", [500, 500], interval, self.settings)[0] == (
            status
        )

    def test_task_success_is_harmed_when_it_falls(self):
        falling, rising = (-0.1, -0.15, -0.05), (0.1, 0.05, 0.15)
        assert judge("task_success", [500, 500], falling, self.settings)[0] == "harmful"
        assert judge("task_success", [500, 500], rising, self.settings)[0] == (
            "non-inferior"
        )

    @pytest.mark.parametrize(
        ("n", "status"), [(100, "non-inferior"), (99, "undecided")]
    )
    def test_a_pass_needs_min_samples_in_each_arm(self, n, status):
        interval = (0.0, -0.01, 0.01)
        assert judge("latency_p50", [n, 500], interval, self.settings)[0] == status

    @pytest.mark.parametrize(("n", "status"), [(30, "harmful"), (29, "undecided")])
    def test_a_rollback_needs_min_samples_harm_in_each_arm(self, n, status):
        interval = (0.3, 0.2, 0.4)
        assert judge("latency_p50", [500, n], interval, self.settings)[0] == status


class TestSettings:
    def test_every_setting_is_described(self):
        assert all(f.description for f in CanarySettings.model_fields.values())

    def test_settings_come_from_driftloop_canary_variables(self, monkeypatch):
        monkeypatch.setenv("DRIFTLOOP_CANARY_MIN_SAMPLES", "250")
        monkeypatch.setenv("DRIFTLOOP_CANARY_METRICS", '["task_success"]')
        settings = CanarySettings()
        assert (settings.min_samples, settings.metrics) == (250, ["task_success"])

    def test_an_unknown_metric_is_refused_naming_the_known_ones(self, monkeypatch):
        monkeypatch.setenv("DRIFTLOOP_CANARY_METRICS", '["thumbs_up"]')
        with pytest.raises(ValidationError, match="'thumbs_down_share'"):
            CanarySettings()

    def test_an_empty_list_of_metrics_is_refused_so_nothing_promotes_unseen(
        self, monkeypatch
    ):
        monkeypatch.setenv("DRIFTLOOP_CANARY_METRICS", "[]")
        with pytest.raises(ValidationError, match="at least 1 item"):
            CanarySettings()
