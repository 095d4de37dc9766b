"""The promotion gate: does the challenger replace the champion?

Each slice of the evaluation set is a target (the challenger must be shown better
there), a guard (it must not get worse there beyond a tolerance) or a report (shown,
never decisive). A slice's verdict rests on the paired bootstrap interval of its mean
improvement, so a lucky average on a few examples promotes nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop.errors import ConfigError
from evals.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_SAMPLES,
    MIN_EXAMPLES,
    paired_bootstrap,
)

Kind = Literal["target", "guard", "report"]
KINDS: tuple[Kind, ...] = ("target", "guard", "report")
DEFAULT_TOLERANCE = 0.05
DEFAULT_MIN_EXAMPLES = 5
# How each metric reads in a sentence: its name and unit.
_WORDS = {"answer_nll": ("answer NLL", "nats/token")}


class GateSettings(BaseSettings):
    """How sure the gate must be before a challenger replaces the champion."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_GATE_", extra="ignore")

    tolerance: float = Field(
        DEFAULT_TOLERANCE,
        ge=0,
        description=(
            "How much worse a guard slice's mean answer NLL may get, in nats per "
            "token: a guard blocks when its interval reaches below -tolerance."
        ),
    )
    min_examples: int = Field(
        DEFAULT_MIN_EXAMPLES,
        ge=2,
        description="Fewest examples a slice needs to count towards the decision.",
    )
    samples: int = Field(
        DEFAULT_SAMPLES,
        ge=100,
        le=1_000_000,
        description="Bootstrap resamples per slice.",
    )
    confidence: float = Field(
        DEFAULT_CONFIDENCE,
        gt=0,
        lt=1,
        description="Confidence level of each slice's interval, such as 0.95.",
    )
    seed: int = Field(
        0, description="Seed of the bootstrap: the same inputs decide alike."
    )


@dataclass
class SliceResult:
    """One slice's paired comparison; a positive improvement favours the challenger."""

    name: str
    kind: Kind
    n: int
    metric: str
    champion: float
    challenger: float
    improvement: float
    low: float
    high: float
    extra: dict[str, float] = field(default_factory=dict)
    p_value: float = math.nan


@dataclass
class Decision:
    """Whether to promote the challenger, why, and the slices the reasons rest on."""

    promote: bool
    reasons: list[str]
    slices: list[SliceResult]
    # One word per slice, in the order of `slices`: what the gate made of it.
    verdicts: list[str] = field(default_factory=list)

    def table(self) -> list[dict[str, Any]]:
        """Return one flat row per slice, ready to log as a table."""
        rows = []
        for index, result in enumerate(self.slices):
            row = asdict(result)
            extra = row.pop("extra")
            verdict = self.verdicts[index] if index < len(self.verdicts) else ""
            rows.append({"slice": row.pop("name"), **row, "verdict": verdict, **extra})
        return rows


def compare_slice(
    name: str,
    kind: Kind,
    champion_nll: np.ndarray,
    challenger_nll: np.ndarray,
    settings: GateSettings,
    extra: dict[str, float] | None = None,
) -> SliceResult:
    """Compare the two models' answer NLL on one slice with a paired bootstrap."""
    if kind not in KINDS:
        raise ConfigError(
            f"slice {name!r} has kind {kind!r}, expected one of {', '.join(KINDS)}. "
            "Use target for what the challenger must improve, guard for what it must "
            "not break, report for what is only shown."
        )
    champion = np.asarray(champion_nll, dtype=np.float64)
    challenger = np.asarray(challenger_nll, dtype=np.float64)
    if len(champion) == len(challenger) and len(champion) < MIN_EXAMPLES:
        # Too few to resample: such a slice never counts (min_examples is at least
        # 2) but still shows in the table.
        result = _unresampled(champion, challenger)
    else:
        result = paired_bootstrap(
            champion,
            challenger,
            lower_is_better=True,
            samples=settings.samples,
            confidence=settings.confidence,
            seed=settings.seed,
        )
    return SliceResult(
        name=name,
        kind=kind,
        n=result["n"],
        metric="answer_nll",
        champion=result["champion"],
        challenger=result["challenger"],
        improvement=result["improvement"],
        low=result["low"],
        high=result["high"],
        extra=dict(extra or {}),
        p_value=result["p_value"],
    )


def decide(slices: list[SliceResult], settings: GateSettings) -> Decision:
    """Promote only if every target improves for sure and no guard breaks."""
    _check_names(slices)
    judged = [_judge(result, settings) for result in slices]
    verdicts = [verdict for verdict, _ in judged]
    reasons = [reason for _, reason in judged if reason]
    counted = verdicts.count("improved") + verdicts.count("not shown")
    failed = [
        result.name
        for result, verdict in zip(slices, verdicts, strict=True)
        if verdict in ("not shown", "regressed")
    ]

    if counted == 0:
        headline = (
            f"Reject: no target slice has at least {settings.min_examples} examples, "
            "so nothing shows the challenger is better. Add a target slice with "
            "enough examples to the evaluation."
        )
    elif failed:
        headline = f"Reject: the challenger failed on {', '.join(failed)}."
    else:
        headline = "Promote: every target slice improved and every guard slice held."
    return Decision(
        promote=counted > 0 and not failed,
        reasons=[headline, *reasons],
        slices=list(slices),
        verdicts=verdicts,
    )


def _unresampled(champion: np.ndarray, challenger: np.ndarray) -> dict[str, Any]:
    """Return the means of a slice too small for a bootstrap, with no interval."""
    first = float(champion.mean()) if len(champion) else math.nan
    second = float(challenger.mean()) if len(challenger) else math.nan
    return {
        "n": len(champion),
        "champion": first,
        "challenger": second,
        "improvement": first - second,
        "low": math.nan,
        "high": math.nan,
        "p_value": math.nan,
    }


def _judge(result: SliceResult, settings: GateSettings) -> tuple[str, str]:
    """Return a slice's verdict and the sentence that explains it (none for reports)."""
    if result.kind == "report":
        return "report", ""
    if result.n < settings.min_examples:
        return "too few", (
            f"{result.name}: {result.kind} slice has {result.n} examples, fewer than "
            f"the {settings.min_examples} needed, so it does not count."
        )

    figures = _figures(result, settings.confidence)
    label, unit = _WORDS.get(result.metric, (result.metric, ""))
    if result.kind == "target":
        if result.low > 0:
            return "improved", f"{result.name}: {label} improved by {figures}."
        why = (
            "the whole interval is below zero: this target slice got worse"
            if result.high < 0
            else "the interval does not exclude zero, so no improvement is shown"
        )
        return "not shown", f"{result.name}: {label} changed by {figures}; {why}."
    allowed = f"{settings.tolerance:.3f} {unit}".rstrip()
    worst = f"{-result.low:.3f} {unit}".rstrip()
    if result.low > -settings.tolerance:
        return "held", (
            f"{result.name}: {label} changed by {figures}, within the guard's "
            f"tolerance of {allowed}."
        )
    return "regressed", (
        f"{result.name}: {label} changed by {figures}; it may worsen by up to "
        f"{worst}, beyond the guard's tolerance of {allowed}."
    )


def _figures(result: SliceResult, confidence: float) -> str:
    """Write a slice's improvement, interval and size as one phrase."""
    unit = _WORDS.get(result.metric, ("", ""))[1]
    return (
        f"{result.improvement:+.3f} {unit} "
        f"[{result.low:+.3f}, {result.high:+.3f}] ({confidence:.0%} interval; "
        f"positive is better) on {result.n} examples"
    ).replace("  ", " ")


def _check_names(slices: list[SliceResult]) -> None:
    names = [result.name for result in slices]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"slices named {', '.join(map(repr, repeated))} appear more than once; "
            "expected one result per slice name, since the table and metrics are "
            "keyed by it. Give each slice its own name."
        )
