"""Canary verdict: the canary's production outcomes against the champion's.

Each arm is the window's interactions whose `model_version` is that registry version's
serving label. Per metric the difference canary - champion gets a 95% interval, and
the verdict is a non-inferiority test against a tolerance in the harmful direction:
rollback when an interval lies wholly beyond it, promote when every interval stays
within it on enough samples, wait otherwise. Interactions count as independent, though
sessions are routed whole, so intervals are a little narrow when sessions are long.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from scipy.stats import bootstrap

from driftloop.errors import ConfigError
from tasks.signals import window_signals

if TYPE_CHECKING:
    from tasks.registry import Version

SERVING_LABEL = "serving_label"
Metric = Literal["thumbs_down_share", "correction_rate", "task_success", "latency_p50"]
METRICS: tuple[Metric, ...] = (
    "thumbs_down_share",
    "correction_rate",
    "task_success",
    "latency_p50",
)
# Per arm: each value and count; then the difference and its interval, if any.
Measured = tuple[list[float | None], list[int], tuple[float, float, float] | None]
# What each metric counts, and the schema field it needs.
_SAMPLES = {
    "thumbs_down_share": ("rated answers", "feedback"),
    "correction_rate": ("interactions", "corrected_response"),
    "task_success": ("answers with an outcome", "task_outcome"),
    "latency_p50": ("answers with a latency", "latency_ms"),
}


class CanarySettings(BaseSettings):
    """When the canary's evidence is enough to promote it or roll it back."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_CANARY_", extra="ignore")

    metrics: list[Metric] = Field(
        default_factory=lambda: list(METRICS),
        min_length=1,
        description="Metrics that must all pass before a promotion, as a JSON list.",
    )
    min_samples: int = Field(
        100,
        ge=10,
        description="Fewest samples per arm and metric before that metric can pass.",
    )
    min_samples_harm: int = Field(
        30,
        ge=5,
        description="Fewest samples per arm and metric before it can roll back.",
    )
    thumbs_down_tolerance: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Largest rise in the thumbs-down share of rated answers accepted.",
    )
    correction_tolerance: float = Field(
        0.02,
        gt=0,
        lt=1,
        description="Largest rise in the share of answers a person corrected accepted.",
    )
    success_tolerance: float = Field(
        0.03,
        gt=0,
        lt=1,
        description="Largest fall in the task success share accepted.",
    )
    latency_tolerance: float = Field(
        0.10,
        gt=0,
        le=10,
        description="Largest relative rise of the median latency accepted (0.1: 10%).",
    )
    resamples: int = Field(
        2000,
        ge=200,
        le=100_000,
        description="Bootstrap resamples of the latency interval.",
    )
    seed: int = Field(0, description="Seed of the bootstrap: reruns agree.")

    def tolerance(self, metric: str) -> float:
        return {
            "thumbs_down_share": self.thumbs_down_tolerance,
            "correction_rate": self.correction_tolerance,
            "task_success": self.success_tolerance,
            "latency_p50": self.latency_tolerance,
        }[metric]


def serving_label(version: Version) -> str:
    """The `model_version` the serving stack logs for a registry version."""
    return version.tags.get(SERVING_LABEL) or f"{version.name}/{version.version}"


@dataclass(frozen=True)
class Arms:
    """The window split by who answered; `others` counts the remaining labels."""

    canary: pd.DataFrame
    champion: pd.DataFrame
    canary_label: str
    champion_label: str
    others: dict[str, int]

    def canary_share(self) -> float | None:
        total = len(self.canary) + len(self.champion)
        return len(self.canary) / total if total else None


def split_arms(frame: pd.DataFrame, canary_label: str, champion_label: str) -> Arms:
    """Split a window's interactions into the canary's and the champion's."""
    labels = frame["model_version"].fillna("(none)")
    others = labels[~labels.isin([canary_label, champion_label])].value_counts()
    return Arms(
        canary=frame[labels == canary_label],
        champion=frame[labels == champion_label],
        canary_label=canary_label,
        champion_label=champion_label,
        others={str(k): int(v) for k, v in others.items()},
    )


@dataclass(frozen=True)
class Comparison:
    """One metric in both arms, the difference's interval and what it says."""

    metric: str
    canary: float | None
    champion: float | None
    n_canary: int
    n_champion: int
    difference: float | None  # canary - champion; latency: canary / champion - 1
    low: float | None
    high: float | None
    tolerance: float
    harmful: str  # the direction that hurts: "higher" or "lower"
    status: str  # "harmful", "non-inferior" or "undecided"
    reason: str


def newcombe_difference(canary: dict, champion: dict) -> tuple[float, float, float]:
    """Difference of two shares with Newcombe's hybrid score 95% interval.

    Newcombe (1998), method 10: it combines the Wilson interval of each share, which
    `signals.share` already gives, and keeps near 95% coverage at small counts and
    shares near 0 where the Wald interval does not. Neither scipy nor any dependency
    offers an interval for a difference of independent shares, hence the formula.
    """
    p1, low1, high1 = canary["value"], canary["ci_low"], canary["ci_high"]
    p2, low2, high2 = champion["value"], champion["ci_low"], champion["ci_high"]
    difference = p1 - p2
    low = difference - np.hypot(p1 - low1, high2 - p2)
    high = difference + np.hypot(high1 - p1, p2 - low2)
    return difference, float(low), float(high)


def _median_change(canary: np.ndarray, champion: np.ndarray, axis: int = -1):
    return np.median(canary, axis=axis) / np.median(champion, axis=axis) - 1


def latency_change(
    canary: np.ndarray, champion: np.ndarray, resamples: int, seed: int
) -> tuple[float, float, float]:
    """Relative change of the median latency with a percentile bootstrap interval."""
    result = bootstrap(
        (canary, champion),
        _median_change,
        n_resamples=resamples,
        batch=100,  # bounds memory to 100 resamples of each arm at a time
        vectorized=True,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    change = float(_median_change(canary, champion))
    return change, float(interval.low), float(interval.high)


def compare_arms(arms: Arms, settings: CanarySettings) -> list[Comparison]:
    """Compare every configured metric between the canary and the champion."""
    signals = window_signals(arms.canary), window_signals(arms.champion)
    return [_compare(metric, arms, signals, settings) for metric in settings.metrics]


def _compare(
    metric: str, arms: Arms, signals: tuple[dict, dict], settings: CanarySettings
) -> Comparison:
    if metric == "latency_p50":
        values, counts, interval = _latencies(arms, settings)
    else:
        values, counts, interval = _shares(signals[0][metric], signals[1][metric])
    difference, low, high = interval or (None, None, None)
    status, reason = judge(metric, counts, interval, settings)
    return Comparison(
        metric=metric,
        canary=values[0],
        champion=values[1],
        n_canary=counts[0],
        n_champion=counts[1],
        difference=difference,
        low=low,
        high=high,
        tolerance=settings.tolerance(metric),
        harmful=harmful_direction(metric),
        status=status,
        reason=reason,
    )


def _shares(canary: dict, champion: dict) -> Measured:
    """Both arms' share, its count, and the difference's interval."""
    found = canary, champion
    values = [f["value"] if f.get("available") else None for f in found]
    counts = [f["n"] if f.get("available") else 0 for f in found]
    return values, counts, None if min(counts) == 0 else newcombe_difference(*found)


def _latencies(arms: Arms, settings: CanarySettings) -> Measured:
    """Both arms' median latency, its count, and the relative change's interval."""
    samples = [
        a["latency_ms"].dropna().to_numpy() for a in (arms.canary, arms.champion)
    ]
    values = [float(np.median(s)) if len(s) else None for s in samples]
    counts = [len(s) for s in samples]
    interval = None
    if min(counts) >= 2:
        interval = latency_change(*samples, settings.resamples, settings.seed)
    return values, counts, interval


def harmful_direction(metric: str) -> str:
    """Which way a metric moves when the canary is worse: "higher" or "lower"."""
    return "lower" if metric == "task_success" else "higher"


def judge(
    metric: str,
    counts: list[int],
    interval: tuple[float, float, float] | None,
    settings: CanarySettings,
) -> tuple[str, str]:
    """Say whether one metric shows harm, non-inferiority, or not enough yet.

    `counts` are the samples of the canary and the champion; `interval` is the
    difference canary - champion with its 95% interval, None when there is none.
    """
    harmful = harmful_direction(metric)
    noun, column = _SAMPLES[metric]
    tolerance = settings.tolerance(metric)
    fewest = min(counts)
    arm = "canary" if counts[0] <= counts[1] else "champion"
    if interval is None:
        if max(counts) == 0:
            return "undecided", (
                f"{metric}: neither arm logged {column} in the window; log it, or "
                "leave the metric out of DRIFTLOOP_CANARY_METRICS"
            )
        return "undecided", (
            f"{metric}: the {arm} has {fewest} {noun}, too few to compare"
        )
    difference, low, high = interval
    # The interval in the harmful direction: positive is worse.
    worst_low, worst_high = (low, high) if harmful == "higher" else (-high, -low)
    shown = f"{metric}: {_describe(metric, difference, low, high)}"
    limit = _change(metric, tolerance if harmful == "higher" else -tolerance)
    if worst_low > tolerance and fewest >= settings.min_samples_harm:
        return "harmful", f"{shown}, wholly beyond the tolerance of {limit}"
    if worst_low > tolerance:
        return "undecided", (
            f"{shown}, beyond the tolerance of {limit}, but the {arm} has only "
            f"{fewest} {noun}; a rollback needs {settings.min_samples_harm} "
            "(DRIFTLOOP_CANARY_MIN_SAMPLES_HARM)"
        )
    if fewest < settings.min_samples:
        return "undecided", (
            f"{metric}: the {arm} has {fewest} {noun}, fewer than the "
            f"{settings.min_samples} a pass needs (DRIFTLOOP_CANARY_MIN_SAMPLES)"
        )
    if worst_high > tolerance:
        return "undecided", (
            f"{shown}, reaching beyond the tolerance of {limit}, so the canary is "
            "not yet shown to be no worse; more traffic narrows the interval"
        )
    return "non-inferior", f"{shown}, within the tolerance of {limit}"


def _change(metric: str, value: float) -> str:
    """A change in the metric's unit: shares in percentage points, latency in %."""
    unit = "%" if metric == "latency_p50" else " points"
    return f"{100 * value:+.1f}{unit}"


def _describe(metric: str, difference: float, low: float, high: float) -> str:
    what = "median latency change" if metric == "latency_p50" else "difference"
    return (
        f"{what} {_change(metric, difference)}, 95% interval "
        f"[{100 * low:+.1f}, {100 * high:+.1f}]"
    )


@dataclass(frozen=True)
class Verdict:
    """What to do with the canary, why, and the evidence."""

    decision: str  # "promote", "rollback" or "wait"
    reasons: list[str]
    comparisons: list[Comparison] = field(default_factory=list)

    def table(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.comparisons]


def decide(arms: Arms, settings: CanarySettings) -> Verdict:
    """Roll back on clear harm, promote on shown non-inferiority, else wait."""
    empty = [
        f"no interaction in the window logs model_version {label!r}, the {name}'s "
        f"serving label; log that label for its answers or set tag {SERVING_LABEL} "
        "on the version to the label it logs"
        for name, label, frame in (
            ("canary", arms.canary_label, arms.canary),
            ("champion", arms.champion_label, arms.champion),
        )
        if frame.empty
    ]
    if empty:
        return Verdict("wait", empty)
    comparisons = compare_arms(arms, settings)
    harmful = [c.reason for c in comparisons if c.status == "harmful"]
    if harmful:
        return Verdict("rollback", harmful, comparisons)
    if all(c.status == "non-inferior" for c in comparisons):
        return Verdict("promote", [c.reason for c in comparisons], comparisons)
    pending = [c.reason for c in comparisons if c.status == "undecided"]
    return Verdict("wait", pending, comparisons)


def metrics(verdict: Verdict, arms: Arms) -> dict[str, float]:
    """The verdict's figures as flat MLflow metric names, per metric and arm."""
    out = {
        "interactions.canary": float(len(arms.canary)),
        "interactions.champion": float(len(arms.champion)),
    }
    if (observed := arms.canary_share()) is not None:
        out["canary_share"] = observed
    parts = ("canary", "champion", "n_canary", "n_champion", "difference")
    for c in verdict.comparisons:
        out.update({f"{c.metric}.{part}": getattr(c, part) for part in parts})
        out.update({f"{c.metric}.low": c.low, f"{c.metric}.high": c.high})
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


# In the registry: which versions serve, and how a canary ends


def serving_versions(use_case: str) -> tuple[Version, Version] | None:
    """The canary and the champion of a use case; None when no canary serves."""
    from tasks import registry

    canary = registry.find(use_case, registry.CANARY)
    if canary is None:
        return None
    champion = registry.get(use_case, registry.CHAMPION)
    if champion.version == canary.version:
        raise ConfigError(
            f"aliases canary and champion both point at version {champion.version} of "
            f"{champion.name}; point canary at another version (driftloop promote "
            f"VERSION --model {use_case} --canary 10)"
        )
    return canary, champion


def no_canary_reason(use_case: str) -> str:
    from tasks.registry import model_name

    return (
        f"{model_name(use_case)} has no version with alias canary, so there is "
        "nothing to judge; start one with `driftloop promote VERSION --model "
        f"{use_case} --canary 10`"
    )


def conclude(
    use_case: str, decision: str, version: str, run_id: str
) -> dict[str, str | None] | None:
    """Promote the canary or withdraw it, and tag it with the decision; None: wait."""
    from driftloop import tracking
    from tasks import registry

    if decision not in ("promote", "rollback"):
        return None
    client, name = tracking.client(), registry.model_name(use_case)
    if decision == "promote":
        moved = registry.promote(use_case, version)  # also removes alias canary
    else:
        client.delete_registered_model_alias(name, registry.CANARY)
        champion = registry.find(use_case, registry.CHAMPION)
        moved = {"champion": champion.version if champion else None, "canary": None}
    if "canary_share" in registry.get(use_case, version).tags:
        client.delete_model_version_tag(name, version, "canary_share")
    client.set_model_version_tag(name, version, "canary_decision", decision)
    client.set_model_version_tag(name, version, "canary_run_id", run_id)
    return moved
