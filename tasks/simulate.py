"""Simulate production traffic of the assistants as hourly JSON-lines log files.

Every day of every use case draws from its own seeded generator: the same config gives
the same bytes, days before `drift_day` are identical across scenarios, and a longer
run starts with the days of a shorter one.

A canary (`canary_version`) serves a share of support sessions from `canary_day` on,
chosen by the session id as a traffic splitter would, so no extra draw is made and a
config without a canary writes the same bytes as before canaries existed.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal, get_args

import orjson

from driftloop.errors import ConfigError
from tasks import simulate_corpus as corpus
from tasks.simulate_corpus import pick

logger = logging.getLogger(__name__)

Scenario = Literal["none", "new-topic", "quality-drop", "language-shift"]
SCENARIOS: tuple[str, ...] = get_args(Scenario)
SUPPORT = corpus.SUPPORT
SALES = corpus.SALES
MODELS = (SUPPORT, SALES)
MANIFEST = "_simulation.json"
MALFORMED_KINDS = (
    "truncated_json",
    "json_array",
    "invalid_utf8",
    "missing_response",
    "bad_timestamp",
    "non_numeric_latency",
)

# Per-record rates, near what a busy gateway shows.
PII_RATE = 0.03
MALFORMED_RATE = 0.002
DUPLICATE_RATE = 0.003
NEXT_HOUR_RETRY = 0.3
ENGLISH_REPLY_RATE = 0.2
MAX_LANGUAGE_SHARE = 0.6
QUALITY_DROP_SLOWDOWN = 1.7

Record = dict[str, Any]
Planted = dict[str, str]
Table = tuple[tuple[str, ...], tuple[float, ...]]
# A record with the PII planted in it, and a session playing out such records.
Turn = tuple[Record, list[Planted]]
Player = Iterator[tuple[Record, list[Planted], int | None]]


class SimulationConfigError(ConfigError, ValueError):
    """A simulation setting is out of range; a ValueError for callers outside."""


def _table(weights: dict[str, float]) -> Table:
    """Turn weights into names and cumulative shares ending exactly at 1."""
    total = sum(weights.values())
    cumulative = [share / total for share in itertools.accumulate(weights.values())]
    cumulative[-1] = 1.0
    return tuple(weights), tuple(cumulative)


def _weighted(rng: random.Random, table: Table) -> str:
    """Draw one name from a weights table."""
    return table[0][bisect.bisect(table[1], rng.random())]


_TURNS = _table({"1": 0.5, "2": 0.27, "3": 0.14, "4": 0.09})
_CHANNELS = _table({"web": 0.55, "app": 0.35, "email": 0.10})
# Shippers write UTC with Z, local time with an offset, or naive UTC.
_STAMP_FORMS = ((0, "Z"), (2, "+02:00"), (-5, "-05:00"), (0, ""))
_STAMP_SHARES = _table({"0": 0.86, "1": 0.06, "2": 0.05, "3": 0.03})
_CLOCK = tuple(
    f"{minute:02d}:{second:02d}" for minute in range(60) for second in range(60)
)
_OUTCOMES = {
    True: _table({"resolved": 0.85, "escalated": 0.10, "abandoned": 0.05}),
    False: _table({"resolved": 0.25, "escalated": 0.45, "abandoned": 0.30}),
}
# (share of poor answers, how they fail) by situation.
_FAILURES = {
    "baseline": (0.04, _table({"vague": 0.5, "truncated": 0.25, "refusal": 0.25})),
    "quality-drop": (0.3, _table({"refusal": 0.45, "truncated": 0.4, "vague": 0.15})),
    "new-topic": (0.65, _table({"refusal": 0.4, "offtopic": 0.6})),
    "sales": (0.04, _table({"vague": 0.6, "refusal": 0.4})),
}
# Lognormal latency noise (sigma 0.35) as 1024 quantiles: one draw instead of gauss.
_LATENCY_NOISE = tuple(
    math.exp(0.35 * NormalDist().inv_cdf((q + 0.5) / 1024)) for q in range(1024)
)
# Traffic by UTC hour: quietest at 03:00, busiest at 15:00.
_DAILY_SHAPE = tuple(
    0.3 + 0.35 * (1 - math.cos(2 * math.pi * (hour - 3) / 24)) for hour in range(24)
)


@dataclass(frozen=True)
class SimulationConfig:
    """What traffic to simulate; the same config always gives the same bytes."""

    days: int = 7  # days simulated from `start`
    per_day: int = 10_000  # records a day, for each use case in `models`
    seed: int = 0
    scenario: Scenario = "none"  # how support traffic changes from `drift_day` on
    drift_day: int = 3  # 0-based index of the first changed day
    # new-topic: share of the day's prompts; language-shift: daily growth of the
    # Spanish and German share (capped at 60%).
    drift_share: float = 0.15
    start: date = date(2026, 11, 1)  # first day, UTC
    models: tuple[str, ...] = (SUPPORT,)  # use cases to simulate
    malformed: bool = True  # add malformed and re-sent lines, as shippers do
    # The model_version label the canary's support answers log; None: no canary.
    canary_version: str | None = None
    canary_share: float = 0.2  # share of support sessions the canary serves
    canary_day: int = 0  # 0-based index of the first day the canary serves
    # Multiplies the canary's share of poor answers (thumbs-down, corrections and
    # failed outcomes follow them): below 1 a better canary, above 1 a worse one.
    canary_failure_factor: float = 1.0
    canary_latency_factor: float = 1.0  # multiplies the canary's latency

    def __post_init__(self) -> None:
        for name, minimum in (
            ("days", 1),
            ("per_day", 1),
            ("seed", 0),
            ("drift_day", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise _refusal(name, f"an integer >= {minimum}", value)
        if self.scenario not in SCENARIOS:
            raise _refusal("scenario", f"one of {', '.join(SCENARIOS)}", self.scenario)
        if self.scenario != "none" and self.drift_day >= self.days:
            expected = f"below days={self.days} for scenario {self.scenario!r}"
            raise _refusal("drift_day", expected, self.drift_day)
        share = self.drift_share
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise _refusal("drift_share", "a number strictly between 0 and 1", share)
        if not 0 < share < 1:
            raise _refusal("drift_share", "a number strictly between 0 and 1", share)
        if type(self.start) is not date:
            raise _refusal("start", "a datetime.date (not a datetime)", self.start)
        models = self.models
        if not isinstance(models, tuple) or not models or not set(models) <= {*MODELS}:
            raise _refusal("models", f"a non-empty tuple drawn from {MODELS}", models)
        if len(set(models)) != len(models):
            raise _refusal("models", "a tuple without repeated names", models)
        if not isinstance(self.malformed, bool):
            raise _refusal("malformed", "True or False", self.malformed)
        if self.canary_version is not None:
            self._check_canary()

    def _check_canary(self) -> None:
        label = self.canary_version
        if not isinstance(label, str) or not label.strip():
            raise _refusal("canary_version", "a non-empty label or None", label)
        day = self.canary_day
        if isinstance(day, bool) or not isinstance(day, int) or day < 0:
            raise _refusal("canary_day", "an integer >= 0", day)
        if day >= self.days:
            raise _refusal("canary_day", f"below days={self.days}", day)
        if not _is_number(self.canary_share) or not 0 < self.canary_share < 1:
            expected = "a number strictly between 0 and 1"
            raise _refusal("canary_share", expected, self.canary_share)
        for name in ("canary_failure_factor", "canary_latency_factor"):
            factor = getattr(self, name)
            if not _is_number(factor) or not 0 < factor <= 100:
                raise _refusal(name, "a number above 0 and at most 100", factor)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _refusal(name: str, expected: str, got: object) -> SimulationConfigError:
    """Build the error for one bad setting."""
    return SimulationConfigError(
        f"SimulationConfig.{name} must be {expected}, got {got!r}; "
        f"set {name} to such a value."
    )


@dataclass(frozen=True)
class SimulationSummary:
    """What `simulate` wrote."""

    files: int
    records: int
    malformed: int
    duplicates: int
    planted_pii: int
    manifest: Path


@dataclass(frozen=True)
class _Day:
    """Everything fixed for one day of one use case."""

    model: str
    day: date
    key: str
    per_day: int
    scenario: str
    drift_share: float
    language_share: float
    version: str
    users: int
    salt: int
    stamps: tuple[tuple[tuple[str, str], ...], ...]
    dates: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
    canary_version: str | None = None
    canary_cut: int = 0  # session ids below this 64-bit value go to the canary
    canary_failure: float = 1.0
    canary_latency: float = 1.0


def _plan_day(config: SimulationConfig, model: str, index: int) -> _Day:
    """Fix the day's scenario, dates and timestamp prefixes."""
    day = config.start + timedelta(days=index)
    drifted = model == SUPPORT and index >= config.drift_day
    scenario = config.scenario if drifted else "none"
    language_share = 0.0
    if scenario == "language-shift":
        growth = config.drift_share * (index - config.drift_day + 1)
        language_share = min(MAX_LANGUAGE_SHARE, growth)
    canary = config.canary_version is not None and model == SUPPORT
    canary = canary and index >= config.canary_day
    return _Day(
        model=model,
        day=day,
        key=f"driftloop-simulate:{config.seed}:{model}:{index}",
        per_day=config.per_day,
        scenario=scenario,
        drift_share=config.drift_share,
        language_share=language_share,
        version=corpus.VERSIONS[model][scenario == "quality-drop"],
        users=max(50, config.per_day // 2),
        salt=(config.seed * 40503 + len(model)) % 2**32,
        stamps=_stamp_prefixes(day),
        dates={
            lang: (
                corpus.written_dates(day, lang, range(-14, 0)),
                corpus.written_dates(day, lang, range(2, 9)),
            )
            for lang in corpus.MONTHS
        },
        canary_version=config.canary_version if canary else None,
        canary_cut=int(config.canary_share * 2**64) if canary else 0,
        canary_failure=config.canary_failure_factor,
        canary_latency=config.canary_latency_factor,
    )


def _stamp_prefixes(day: date) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Give, per UTC hour, each timestamp form's local date-hour prefix and suffix."""
    midnight = datetime(day.year, day.month, day.day)
    return tuple(
        tuple(
            ((midnight + timedelta(hours=hour + shift)).strftime("%Y-%m-%dT%H"), tail)
            for shift, tail in _STAMP_FORMS
        )
        for hour in range(24)
    )


@cache
def _topic_table(model: str) -> Table:
    """Weights of the baseline topics of a use case."""
    return _table(corpus.SUPPORT_WEIGHTS if model == SUPPORT else corpus.SALES_WEIGHTS)


def _user_rank(rng: random.Random, users: int) -> int:
    """Draw a user's rank with weight (rank + 50) ** -1.1: a few users are very busy."""
    low, high = 50**-0.1, (users + 50) ** -0.1
    return min(int((low - rng.random() * (low - high)) ** -10) - 50, users - 1)


@dataclass(slots=True)
class _Session:
    """One conversation: who, about what, in which language and log format."""

    plan: _Day
    lang: str
    topic: str
    bank: corpus.Bank
    slots: corpus.Slots
    system: str | None
    form: int
    session_id: str
    user_id: str
    channel: str
    locale: str
    asked: str = ""
    canary: bool = False  # served by the canary rather than the day's version


def _open_session(rng: random.Random, plan: _Day) -> _Session:
    """Draw a session's user, language, topic, channel and timestamp form."""
    lang = "en"
    if plan.language_share and rng.random() < plan.language_share:
        lang = "es" if rng.random() < 0.5 else "de"
    if plan.scenario == "new-topic" and rng.random() < plan.drift_share:
        topic = corpus.NEW_TOPIC_NAME
    else:
        topic = _weighted(rng, _topic_table(plan.model))
    rank = _user_rank(rng, plan.users)
    bits = rng.getrandbits(64)
    session_id = f"ses_{bits:016x}"
    user_id = f"usr_{(rank * 2654435761 + plan.salt) % 2**32:08x}"
    if plan.model == SALES:
        system, form, channel, locale = corpus.SYSTEM_PROMPTS[SALES], 0, "web", "en-US"
    else:
        channel = _weighted(rng, _CHANNELS)
        # The email gateway forwards the customer's text without a system turn.
        system = None if channel == "email" else corpus.SYSTEM_PROMPTS[SUPPORT]
        form = int(_weighted(rng, _STAMP_SHARES))
        locale = pick(rng, corpus.LOCALES[lang])
    return _Session(
        plan=plan,
        lang=lang,
        topic=topic,
        bank=corpus.bank(plan.model, lang, topic),
        slots=corpus.Slots(rng, lang, plan.dates[lang], plan.day.year),
        system=system,
        form=form,
        session_id=session_id,
        user_id=user_id,
        channel=channel,
        locale=locale,
        canary=bits < plan.canary_cut,
    )


def _play(rng: random.Random, plan: _Day, hour: int, turns: int, at: int) -> Player:
    """Play a session: yield each turn's record, its PII and the next turn's time."""
    session = _open_session(rng, plan)
    prefix, suffix = plan.stamps[hour][session.form]
    messages: list[dict[str, str]] = []
    if session.system is not None:
        messages.append({"role": "system", "content": session.system})
    for turn in range(turns):
        request_id = f"req_{rng.getrandbits(80):020x}"
        prompt, good = _exchange(rng, session, turn)
        planted: list[Planted] = []
        if rng.random() < PII_RATE:
            prompt, kind, value = corpus.plant_pii(rng, session.lang, prompt)
            planted.append({"value": value, "kind": kind, "request_id": request_id})
        messages.append({"role": "user", "content": prompt})
        quality = _quality(rng, session)
        response = good
        if quality != "good":
            response = corpus.poor_answer(
                rng, quality, session.topic, good, session.slots
            )
        timestamp = f"{prefix}:{_CLOCK[at // 1000]}.{at % 1000:03d}{suffix}"
        record = _record(rng, session, request_id, timestamp, messages, response)
        if plan.model == SUPPORT:
            record |= _judgement(rng, session, quality, good)
        record["topic"] = session.topic
        messages.append({"role": "assistant", "content": response})
        # The user reads the answer and types the next turn.
        at += 20_000 + int(rng.random() * 180_000)
        yield record, planted, at if turn + 1 < turns else None


def _exchange(rng: random.Random, session: _Session, turn: int) -> tuple[str, str]:
    """Draw the user's turn and the answer a good model would give to it."""
    bank, slots = session.bank, session.slots
    if turn == 0:
        text, answer = pick(rng, bank.openers)
        prompt, good = text.format_map(slots), bank.answers[answer].format_map(slots)
    else:
        index = int(rng.random() * len(bank.followups))
        # People rephrase rather than send the same follow-up twice in a row.
        while bank.followups[index][0] == session.asked:
            index = (index + 1) % len(bank.followups)
        text, reply = bank.followups[index]
        session.asked = text
        prompt, good = text.format_map(slots), reply.format_map(slots)
    return corpus.typo(rng, prompt), good


def _quality(rng: random.Random, session: _Session) -> str:
    """Decide whether the model answers well, and if not, how it fails."""
    if session.lang != "en" and rng.random() < ENGLISH_REPLY_RATE:
        return "english"
    if session.topic == corpus.NEW_TOPIC_NAME:
        rate, kinds = _FAILURES["new-topic"]
    elif session.plan.model == SALES:
        rate, kinds = _FAILURES["sales"]
    elif session.plan.scenario == "quality-drop":
        rate, kinds = _FAILURES["quality-drop"]
    else:
        rate, kinds = _FAILURES["baseline"]
    if session.canary:
        rate = min(1.0, rate * session.plan.canary_failure)
    return "good" if rng.random() >= rate else _weighted(rng, kinds)


def _record(
    rng: random.Random,
    session: _Session,
    request_id: str,
    timestamp: str,
    messages: list[dict[str, str]],
    response: str,
) -> Record:
    """Assemble the fields every use case logs; turns share their message dicts."""
    completion_tokens = len(response) // 4 + 1
    latency = (450.0 + 9.0 * completion_tokens) * pick(rng, _LATENCY_NOISE)
    if session.plan.scenario == "quality-drop":
        latency *= QUALITY_DROP_SLOWDOWN
    version = session.plan.version
    if session.canary:
        latency *= session.plan.canary_latency
        version = session.plan.canary_version or version
    return {
        "request_id": request_id,
        "timestamp": timestamp,
        "model": session.plan.model,
        "model_version": version,
        "messages": messages.copy(),
        "response": response,
        "latency_ms": round(latency, 1),
        "prompt_tokens": sum(len(m["content"]) + 16 for m in messages) // 4,
        "completion_tokens": completion_tokens,
        "session_id": session.session_id,
        "user_id": session.user_id,
    }


def _judgement(
    rng: random.Random, session: _Session, quality: str, good: str
) -> dict[str, Any]:
    """Draw a support turn's sparse feedback, human correction and outcome."""
    poor = quality != "good"
    feedback, comment, corrected = None, None, None
    if rng.random() < (0.22 if poor else 0.075):
        feedback = -1 if rng.random() < (0.85 if poor else 0.18) else 1
        if rng.random() < (0.45 if feedback < 0 else 0.08):
            comments = corpus.COMMENTS[session.lang]
            key = "positive" if feedback > 0 else quality
            comment = pick(rng, comments.get(key) or comments["negative"])
    if rng.random() < (0.55 if feedback == -1 else 0.08 if poor else 0.002):
        corrected = f"{good} {pick(rng, corpus.HUMAN_NOTES[session.lang])}"
    return {
        "feedback": feedback,
        "feedback_comment": comment,
        "corrected_response": corrected,
        "task_outcome": _weighted(rng, _OUTCOMES[not poor]),
        "channel": session.channel,
        "locale": session.locale,
    }


def _hourly_counts(rng: random.Random, per_day: int) -> list[int]:
    """Split a day's records over its hours along the daily cycle, summing exactly."""
    weights = [share * (0.9 + 0.2 * rng.random()) for share in _DAILY_SHAPE]
    total = sum(weights)
    raw = [per_day * weight / total for weight in weights]
    counts = [int(value) for value in raw]
    by_remainder = sorted(range(24), key=lambda hour: counts[hour] - raw[hour])
    for hour in by_remainder[: per_day - sum(counts)]:
        counts[hour] += 1
    return counts


def _hour(rng: random.Random, plan: _Day, hour: int, count: int) -> Iterator[Turn]:
    """Yield an hour's `count` records in time order, interleaving its sessions."""
    sessions = []
    while count:
        turns = min(int(_weighted(rng, _TURNS)), count)
        # Leave room for the later turns so the whole session stays inside the hour.
        start = int(rng.random() * (3_600_000 - (turns - 1) * 200_000))
        sessions.append((start, turns))
        count -= turns
    sessions.sort()
    playing: list[tuple[int, int, Player]] = []
    for order, (start, turns) in enumerate(sessions):
        while playing and playing[0][0] < start:
            yield _next_turn(playing)
        heapq.heappush(playing, (start, order, _play(rng, plan, hour, turns, start)))
    while playing:
        yield _next_turn(playing)


def _next_turn(playing: list[tuple[int, int, Player]]) -> Turn:
    """Play the earliest pending turn and queue that session's next one."""
    _, order, session = playing[0]
    record, planted, next_at = next(session)
    if next_at is None:
        heapq.heappop(playing)
    else:
        heapq.heapreplace(playing, (next_at, order, session))
    return record, planted


def _day_hours(plan: _Day) -> Iterator[tuple[int, Iterator[Turn]]]:
    """Yield each hour of a day with the stream of its records in time order."""
    rng = random.Random(plan.key)
    for hour, count in enumerate(_hourly_counts(rng, plan.per_day)):
        yield hour, _hour(rng, plan, hour, count)


def iter_interactions(config: SimulationConfig) -> Iterator[Record]:
    """Yield the simulated records as flat dicts, without malformed or repeated lines.

    Records come by use case, then day, then time. Support records are exactly what
    the files hold; sales records are the flat form of their chat-completions lines.
    Turns of one session share their message dicts: copy a record before editing it.
    """
    for model in config.models:
        for index in range(config.days):
            for _, stream in _day_hours(_plan_day(config, model, index)):
                yield from (record for record, _ in stream)


def _chat_completion(record: Record) -> Record:
    """Reshape a flat record into a logged OpenAI chat-completions exchange."""
    shaped: Record = {
        "id": record["request_id"],
        "created_at": record["timestamp"],
        "request": {"model": record["model"], "messages": record["messages"]},
    }
    if "response" in record:
        answer = {"role": "assistant", "content": record["response"]}
        prompt, completion = record["prompt_tokens"], record["completion_tokens"]
        shaped["response"] = {
            "id": f"chatcmpl-{record['request_id'][4:]}",
            "model": record["model_version"],
            "choices": [{"index": 0, "message": answer, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
    keys = ("session_id", "user_id", "latency_ms", "topic", "model_version")
    shaped["metadata"] = {key: record[key] for key in keys}
    return shaped


def _encode(model: str, record: Record) -> bytes:
    """Write a record, well-formed or not, as a log line in its use case's shape."""
    shaped = _chat_completion(record) if model == SALES else record
    return orjson.dumps(shaped, option=orjson.OPT_APPEND_NEWLINE)


_FIELD_FAULTS: dict[str, Callable[[Record], Record]] = {
    "missing_response": lambda r: {k: v for k, v in r.items() if k != "response"},
    "bad_timestamp": lambda r: {**r, "timestamp": "yesterday"},
    "non_numeric_latency": lambda r: {**r, "latency_ms": "n/a"},
}


def _corrupt(rng: random.Random, kind: str, model: str, record: Record) -> bytes:
    """Write a record as the malformed line of `kind`."""
    if kind in _FIELD_FAULTS:
        return _encode(model, _FIELD_FAULTS[kind](record))
    line = _encode(model, record)[:-1]
    if kind == "json_array":
        return b"[" + line + b"]\n"
    if kind == "invalid_utf8":
        at = line.rfind(b'":"') + 3
        return line[:at] + b"\xc3\x28" + line[at:] + b"\n"
    # Cut on a character boundary so the line is truncated JSON and nothing else.
    cut = int(len(line) * (0.3 + 0.6 * rng.random()))
    while line[cut - 1] >= 0x80:
        cut -= 1
    return line[:cut] + b"\n"


@dataclass
class _Tally:
    """What the writer produced, for the manifest and the summary."""

    files: int = 0
    records: int = 0
    duplicates: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    topics: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    planted: list[Planted] = field(default_factory=list)


class _Shipper:
    """Turns a day's records into log lines with the faults a log shipper adds."""

    def __init__(self, plan: _Day, enabled: bool) -> None:
        self.model, self.enabled = plan.model, enabled
        self.rng = random.Random(f"{plan.key}:faults")
        # Kinds take turns so that even a small run shows each of them.
        start = self.rng.randrange(len(MALFORMED_KINDS))
        self.kinds = itertools.islice(itertools.cycle(MALFORMED_KINDS), start, None)
        self.malformed: Counter[str] = Counter()
        self.duplicates = 0
        self.retries: list[bytes] = []

    def lines(self, stream: Iterable[Turn], last: bool) -> Iterator[bytes]:
        """Encode an hour's records, corrupting some and re-sending a few."""
        if not self.enabled:
            yield from (_encode(self.model, record) for record, _ in stream)
            return
        rng, written = self.rng, 0
        # (line number it is due at, order, line): re-sent lines waiting their turn.
        due = [(rng.randrange(20), -1 - n, line) for n, line in enumerate(self.retries)]
        heapq.heapify(due)
        self.retries = []
        for record, planted in stream:
            while due and due[0][0] <= written:
                yield heapq.heappop(due)[2]
                written += 1
            # Lines that carry planted PII stay intact so every planted item is found.
            if rng.random() < MALFORMED_RATE and not planted:
                kind = next(self.kinds)
                self.malformed[kind] += 1
                yield _corrupt(rng, kind, self.model, record)
            else:
                line = _encode(self.model, record)
                yield line
                if rng.random() < DUPLICATE_RATE:
                    self._resend(line, written, last, due)
            written += 1
        while due:
            yield heapq.heappop(due)[2]

    def _resend(
        self, line: bytes, written: int, last: bool, due: list[tuple[int, int, bytes]]
    ) -> None:
        """Queue a retry of `line` later in this hour's file or in the next one."""
        self.duplicates += 1
        if not last and self.rng.random() < NEXT_HOUR_RETRY:
            self.retries.append(line)
        else:
            later = written + 1 + self.rng.randrange(200)
            heapq.heappush(due, (later, written, line))


def _write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Write a file under a temporary name, then move it into place."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as file:
        file.writelines(chunks)
    os.replace(temporary, path)


def _write_day(out: Path, plan: _Day, malformed: bool, tally: _Tally) -> None:
    """Write the 24 hourly files of one day of one use case."""
    folder = out / plan.model / plan.day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    shipper = _Shipper(plan, malformed)
    topics: Counter[str] = Counter()
    for hour, stream in _day_hours(plan):
        counted = _counted(stream, topics, tally)
        lines = shipper.lines(counted, last=hour == 23)
        _write_atomic(folder / f"{hour:02d}.jsonl", lines)
        tally.files += 1
    tally.topics.setdefault(plan.model, {})[plan.day.isoformat()] = topics
    tally.malformed += shipper.malformed
    tally.duplicates += shipper.duplicates


def _counted(
    stream: Iterable[Turn], topics: Counter[str], tally: _Tally
) -> Iterator[Turn]:
    """Pass records through while counting them by topic and collecting their PII."""
    for record, planted in stream:
        topics[record["topic"]] += 1
        tally.records += 1
        if planted:
            tally.planted += planted
        yield record, planted


def _manifest(config: SimulationConfig, tally: _Tally) -> bytes:
    """Describe the run: config, topic counts, faults and planted PII."""
    settings = {**asdict(config), "start": config.start.isoformat()}
    if config.canary_version is None:
        # Keeps the manifest of a run without a canary as it was before canaries.
        settings = {k: v for k, v in settings.items() if not k.startswith("canary_")}
    document = {
        "config": {**settings, "models": list(config.models)},
        "files": tally.files,
        "records": tally.records,
        "topics": {
            model: {day: dict(sorted(counts.items())) for day, counts in days.items()}
            for model, days in tally.topics.items()
        },
        "malformed": {kind: tally.malformed[kind] for kind in MALFORMED_KINDS},
        "duplicates": tally.duplicates,
        "planted_pii": tally.planted,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def simulate(out: Path, config: SimulationConfig) -> SimulationSummary:
    """Write the traffic as `out/<model>/<day>/<hour>.jsonl` plus a manifest."""
    tally = _Tally()
    for model in config.models:
        for index in range(config.days):
            _write_day(out, _plan_day(config, model, index), config.malformed, tally)
    manifest = out / MANIFEST
    _write_atomic(manifest, [_manifest(config, tally)])
    summary = SimulationSummary(
        files=tally.files,
        records=tally.records,
        malformed=sum(tally.malformed.values()),
        duplicates=tally.duplicates,
        planted_pii=len(tally.planted),
        manifest=manifest,
    )
    logger.info(
        "simulation out=%s scenario=%s files=%d records=%d malformed=%d "
        "duplicates=%d planted_pii=%d",
        out,
        config.scenario,
        summary.files,
        summary.records,
        summary.malformed,
        summary.duplicates,
        summary.planted_pii,
    )
    return summary
