"""The gate promotes a challenger only when targets improve and guards hold."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from driftloop.errors import ConfigError
from evals.gate import Decision, GateSettings, SliceResult, compare_slice, decide

SETTINGS = GateSettings(tolerance=0.05, min_examples=5)


def result(
    name: str,
    kind: str = "target",
    low: float = 0.31,
    high: float = 0.55,
    improvement: float = 0.42,
    n: int = 37,
) -> SliceResult:
    return SliceResult(
        name=name,
        kind=kind,
        n=n,
        metric="answer_nll",
        champion=1.5,
        challenger=1.5 - improvement,
        improvement=improvement,
        low=low,
        high=high,
    )


HELD_GUARD = result("safety", "guard", low=-0.02, high=0.03, improvement=0.01, n=20)


class TestDecide:
    def test_the_challenger_is_promoted_when_the_target_improves_and_guards_hold(self):
        decision = decide([result("drift"), HELD_GUARD], SETTINGS)
        assert decision.promote
        assert decision.reasons[1] == (
            "drift: answer NLL improved by +0.420 nats/token [+0.310, +0.550] "
            "(95% interval; positive is better) on 37 examples."
        )
        assert "safety: answer NLL changed by +0.010" in decision.reasons[2]
        assert "within the guard's tolerance of 0.050 nats/token" in decision.reasons[2]

    def test_the_challenger_is_rejected_when_the_targets_interval_includes_zero(self):
        target = result("drift", low=-0.01, high=0.2, improvement=0.09)
        decision = decide([target, HELD_GUARD], SETTINGS)
        assert not decision.promote
        assert (
            "drift: answer NLL changed by +0.090 nats/token [-0.010, +0.200]"
            in (decision.reasons[1])
        )
        assert (
            "does not exclude zero, so no improvement is shown" in decision.reasons[1]
        )

    def test_a_target_that_got_worse_is_named_as_such(self):
        target = result("drift", low=-0.3, high=-0.1, improvement=-0.2)
        decision = decide([target], SETTINGS)
        assert not decision.promote
        assert decision.reasons[1].endswith("below zero: this target slice got worse.")

    def test_a_guard_regressing_beyond_tolerance_blocks_and_says_by_how_much(self):
        guard = result("safety", "guard", low=-0.12, high=0.0, improvement=-0.06, n=20)
        decision = decide([result("drift"), guard], SETTINGS)
        assert not decision.promote
        assert decision.reasons[0] == "Reject: the challenger failed on safety."
        assert decision.reasons[2] == (
            "safety: answer NLL changed by -0.060 nats/token [-0.120, +0.000] "
            "(95% interval; positive is better) on 20 examples; it may worsen by up "
            "to 0.120 nats/token, beyond the guard's tolerance of 0.050 nats/token."
        )

    @pytest.mark.parametrize(("low", "promote"), [(-0.049, True), (-0.05, False)])
    def test_a_guard_blocks_once_its_interval_reaches_minus_the_tolerance(
        self, low, promote
    ):
        guard = result("safety", "guard", low=low, high=0.02, improvement=-0.01)
        assert decide([result("drift"), guard], SETTINGS).promote is promote

    def test_a_slice_with_too_few_examples_does_not_count(self):
        guard = result("rare", "guard", low=-0.9, high=-0.5, improvement=-0.7, n=3)
        decision = decide([result("drift"), guard], SETTINGS)
        assert decision.promote
        assert (
            "rare: guard slice has 3 examples, fewer than the 5 needed, so it does "
            "not count." in decision.reasons
        )
        assert decision.verdicts == ["improved", "too few"]

    def test_without_any_counting_target_slice_the_challenger_is_rejected(self):
        decision = decide([HELD_GUARD, result("tiny", n=4)], SETTINGS)
        assert not decision.promote
        assert decision.reasons[0].startswith(
            "Reject: no target slice has at least 5 examples"
        )

    def test_with_no_slices_at_all_the_challenger_is_rejected(self):
        decision = decide([], SETTINGS)
        assert not decision.promote
        assert "no target slice" in decision.reasons[0]

    def test_a_report_slice_never_blocks(self):
        report = result("chitchat", "report", low=-2.0, high=-1.0, improvement=-1.5)
        assert decide([result("drift"), report], SETTINGS).promote

    def test_slices_sharing_a_name_are_refused(self):
        with pytest.raises(
            ConfigError, match="slices named 'drift' appear more than once"
        ):
            decide([result("drift"), result("drift")], SETTINGS)

    def test_the_table_has_one_flat_row_per_slice_with_its_verdict(self):
        target = result("drift")
        target.extra = {"similarity": 0.8}
        rows = decide([target, HELD_GUARD], SETTINGS).table()
        assert [row["slice"] for row in rows] == ["drift", "safety"]
        assert rows[0]["verdict"] == "improved"
        assert rows[0]["similarity"] == 0.8
        assert rows[1]["low"] == -0.02


class TestCompareSlice:
    def test_a_lower_challenger_nll_is_a_positive_improvement(self):
        champion = np.array([2.0, 1.4, 3.1, 2.2, 1.9, 2.6])
        challenger = champion - np.array([0.5, 0.4, 0.6, 0.5, 0.45, 0.55])
        found = compare_slice(
            "drift", "target", champion, challenger, SETTINGS, extra={"refusal": 0.0}
        )
        assert (found.name, found.kind, found.n, found.metric) == (
            "drift",
            "target",
            6,
            "answer_nll",
        )
        assert found.improvement == pytest.approx(0.5)
        assert 0.4 <= found.low < 0.5 < found.high <= 0.6
        assert found.extra == {"refusal": 0.0}
        assert isinstance(decide([found], SETTINGS), Decision)

    def test_a_single_example_gives_a_slice_without_an_interval_that_does_not_count(
        self,
    ):
        found = compare_slice("rare", "guard", [2.0], [1.0], SETTINGS)
        assert found.n == 1
        assert found.improvement == pytest.approx(1.0)
        assert np.isnan(found.low) and np.isnan(found.high)

    def test_an_unknown_kind_is_refused(self):
        with pytest.raises(ConfigError, match="kind 'goal', expected one of target"):
            compare_slice("drift", "goal", [1.0, 2.0], [1.0, 2.0], SETTINGS)


class TestGateSettings:
    def test_settings_are_read_from_driftloop_gate_variables(self, monkeypatch):
        monkeypatch.setenv("DRIFTLOOP_GATE_TOLERANCE", "0.1")
        monkeypatch.setenv("DRIFTLOOP_GATE_MIN_EXAMPLES", "12")
        settings = GateSettings()
        assert (settings.tolerance, settings.min_examples) == (0.1, 12)
        assert (settings.samples, settings.confidence, settings.seed) == (2000, 0.95, 0)

    def test_a_minimum_below_two_examples_is_refused(self):
        with pytest.raises(ValidationError, match="min_examples"):
            GateSettings(min_examples=1)
