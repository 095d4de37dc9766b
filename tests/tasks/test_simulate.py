"""Behaviour of the production-traffic simulator, read back from the files it writes."""

from __future__ import annotations

import itertools
import json
import re
import statistics
import tracemalloc
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from driftloop.errors import ConfigError
from tasks.simulate import (
    MALFORMED_KINDS,
    SALES,
    SUPPORT,
    SimulationConfig,
    SimulationSummary,
    iter_interactions,
    simulate,
)
from tasks.simulate_corpus import FAILURES, VERSIONS

START = date(2026, 11, 1)
REFUSED = {*FAILURES["refusal"], *FAILURES["offtopic"]}
BOTH = (SUPPORT, SALES)
SUPPORT_TOPICS = {
    "password_reset",
    "billing_refund",
    "shipping_delay",
    "order_cancellation",
    "account_deletion",
    "subscription_upgrade",
    "app_crash",
    "invoice_request",
    "address_change",
    "promo_code",
}


def _files(out: Path) -> dict[str, bytes]:
    """Every file under `out` by relative path."""
    return {
        str(path.relative_to(out)): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file()
    }


def _lines(out: Path, model: str) -> list[tuple[Path, bytes]]:
    """Every log line of one use case with the file it sits in, in file order."""
    return [
        (path, line)
        for path in sorted((out / model).rglob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def _flat(obj: dict[str, Any]) -> dict[str, Any]:
    """Read a support line as is and a chat-completions line as the same fields."""
    if "request" not in obj:
        return obj
    flat = {
        "request_id": obj["id"],
        "timestamp": obj["created_at"],
        "messages": obj["request"]["messages"],
        **obj["metadata"],
    }
    if "response" in obj:
        flat["response"] = obj["response"]["choices"][0]["message"]["content"]
    return flat


def _kind(line: bytes) -> str:
    """Name the fault of a log line, or `ok`."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "invalid_utf8"
    except json.JSONDecodeError:
        return "truncated_json"
    if isinstance(obj, list):
        return "json_array"
    flat = _flat(obj)
    if "response" not in flat:
        return "missing_response"
    if flat["timestamp"] == "yesterday":
        return "bad_timestamp"
    if isinstance(flat["latency_ms"], str):
        return "non_numeric_latency"
    return "ok"


def _records(out: Path, model: str) -> list[dict[str, Any]]:
    """The well-formed records of one use case, flattened, in file order."""
    return [
        _flat(json.loads(line)) for _, line in _lines(out, model) if _kind(line) == "ok"
    ]


def _instant(stamp: str) -> datetime:
    """Parse a logged timestamp; naive ones are UTC."""
    parsed = datetime.fromisoformat(stamp)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _passes_luhn(number: str) -> bool:
    digits = [int(char) for char in number if char.isdigit()]
    total = sum(
        digit if position % 2 == 0 else (digit * 2 - 9 if digit > 4 else digit * 2)
        for position, digit in enumerate(reversed(digits))
    )
    return total % 10 == 0


def _day_of(record: dict[str, Any]) -> date:
    return _instant(record["timestamp"]).astimezone(UTC).date()


def _prompt(record: dict[str, Any]) -> str:
    return record["messages"][-1]["content"]


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationSummary]:
    """One busy day of both use cases with malformed and repeated lines."""
    out = tmp_path_factory.mktemp("dirty")
    config = SimulationConfig(days=1, per_day=15_000, seed=7, models=BOTH)
    return out, simulate(out, config)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationConfig]:
    """Two days of both use cases without malformed or repeated lines."""
    out = tmp_path_factory.mktemp("clean")
    config = SimulationConfig(days=2, per_day=3_000, models=BOTH, malformed=False)
    simulate(out, config)
    return out, config


@pytest.fixture(scope="module")
def week() -> list[dict[str, Any]]:
    """A week of support traffic held in memory."""
    return list(iter_interactions(SimulationConfig(days=7, per_day=2_000, seed=3)))


class TestDeterminism:
    def test_the_same_config_writes_identical_bytes(self, tmp_path: Path) -> None:
        config = SimulationConfig(
            days=2, per_day=800, models=BOTH, scenario="new-topic", drift_day=1
        )
        simulate(tmp_path / "a", config)
        simulate(tmp_path / "b", config)

        first, second = _files(tmp_path / "a"), _files(tmp_path / "b")

        assert len(first) == 2 * 2 * 24 + 1
        assert first == second

    def test_a_different_seed_writes_different_traffic(self, tmp_path: Path) -> None:
        simulate(tmp_path / "a", SimulationConfig(days=1, per_day=500, seed=1))
        simulate(tmp_path / "b", SimulationConfig(days=1, per_day=500, seed=2))

        first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
        hourly = [name for name in first if name.endswith(".jsonl")]

        assert all(first[name] != second[name] for name in hourly if first[name])

    def test_days_before_drift_day_are_identical_across_scenarios(
        self, tmp_path: Path
    ) -> None:
        base = {"days": 2, "per_day": 600, "drift_day": 1, "models": BOTH}
        simulate(tmp_path / "none", SimulationConfig(**base))
        simulate(tmp_path / "drop", SimulationConfig(**base, scenario="quality-drop"))

        none, drop = _files(tmp_path / "none"), _files(tmp_path / "drop")
        day0 = [name for name in none if "2026-11-01" in name]
        support_day1 = [
            name for name in none if name.startswith(f"{SUPPORT}/2026-11-02")
        ]

        assert len(day0) == 48
        assert all(none[name] == drop[name] for name in day0)
        assert all(none[name] != drop[name] for name in support_day1)

    def test_scenarios_leave_the_sales_assistant_untouched(
        self, tmp_path: Path
    ) -> None:
        base = {"days": 2, "per_day": 400, "drift_day": 0, "models": BOTH}
        simulate(tmp_path / "none", SimulationConfig(**base))
        simulate(
            tmp_path / "shift", SimulationConfig(**base, scenario="language-shift")
        )

        none, shift = _files(tmp_path / "none"), _files(tmp_path / "shift")
        sales = [name for name in none if name.startswith(SALES)]

        assert len(sales) == 48
        assert all(none[name] == shift[name] for name in sales)


class TestLayout:
    def test_each_use_case_gets_one_file_per_hour_of_each_day(
        self, clean: tuple[Path, SimulationConfig]
    ) -> None:
        out, _ = clean

        expected = {
            f"{model}/{day}/{hour:02d}.jsonl"
            for model in BOTH
            for day in ("2026-11-01", "2026-11-02")
            for hour in range(24)
        }

        assert set(_files(out)) == expected | {"_simulation.json"}

    def test_each_day_holds_exactly_per_day_records(
        self, clean: tuple[Path, SimulationConfig]
    ) -> None:
        out, config = clean

        per_day = Counter(
            (model, path.parent.name)
            for model in BOTH
            for path, _ in _lines(out, model)
        )

        assert set(per_day.values()) == {config.per_day}
        assert len(per_day) == 4

    def test_night_hours_carry_less_traffic_than_afternoon_hours(
        self, clean: tuple[Path, SimulationConfig]
    ) -> None:
        out, _ = clean

        by_hour = Counter(int(path.stem) for path, _ in _lines(out, SUPPORT))
        night = sum(by_hour[hour] for hour in range(1, 6))
        afternoon = sum(by_hour[hour] for hour in range(13, 18))

        assert night < 0.5 * afternoon

    def test_timestamps_fall_within_the_day_of_their_file(
        self, dirty: tuple[Path, SimulationSummary]
    ) -> None:
        out, _ = dirty

        outside = [
            line
            for model in BOTH
            for path, line in _lines(out, model)
            if _kind(line) == "ok"
            and _day_of(_flat(json.loads(line))).isoformat() != path.parent.name
        ]

        assert outside == []

    def test_timestamps_mix_utc_offsets_and_naive_forms_of_the_file_hour(
        self, clean: tuple[Path, SimulationConfig]
    ) -> None:
        out, _ = clean
        stamps = [
            (int(path.stem), json.loads(line)["timestamp"])
            for path, line in _lines(out, SUPPORT)
        ]

        forms = Counter(
            "Z" if stamp.endswith("Z") else stamp[-6:] if stamp[-6] in "+-" else "naive"
            for _, stamp in stamps
        )
        hours = {hour == _instant(stamp).astimezone(UTC).hour for hour, stamp in stamps}

        assert set(forms) == {"Z", "+02:00", "-05:00", "naive"}
        assert forms["Z"] / len(stamps) > 0.8
        assert 0.01 < forms["naive"] / len(stamps) < 0.05
        assert hours == {True}

    def test_simulate_streams_instead_of_holding_a_day_in_memory(
        self, tmp_path: Path
    ) -> None:
        tracemalloc.start()
        simulate(tmp_path, SimulationConfig(days=1, per_day=8_000))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        # Held in memory, that day's records alone would take about 14 MiB.
        assert peak < 4 * 2**20


class TestRecords:
    def test_support_lines_hold_the_flat_fields_plus_channel_locale_and_topic(
        self, clean: tuple[Path, SimulationConfig]
    ) -> None:
        out, _ = clean

        keys = {frozenset(json.loads(line)) for _, line in _lines(out, SUPPORT)}

        assert keys == {
            frozenset(
                {
                    "request_id",
                    "timestamp",
                    "model",
                    "model_version",
                    "messages",
                    "response",
                    "latency_ms",
                    "prompt_tokens",
                    "completion_tokens",
                    "feedback",
                    "feedback_comment",
                    "corrected_response",
                    "task_outcome",
                    "session_id",
                    "user_id",
                    "channel",
                    "locale",
                    "topic",
                }
            )
        }

    def test_sales_lines_have_the_chat_completions_shape(
        self, clean: tuple[Path, SimulationConfig]
    ) -> None:
        out, _ = clean

        line = json.loads(_lines(out, SALES)[0][1])
        usage = line["response"]["usage"]

        assert set(line) == {"id", "created_at", "request", "response", "metadata"}
        assert line["request"]["model"] == SALES
        assert line["request"]["messages"][-1]["role"] == "user"
        assert line["response"]["choices"][0]["message"]["role"] == "assistant"
        assert line["response"]["choices"][0]["finish_reason"] == "stop"
        assert (
            usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        )
        assert set(line["metadata"]) == {
            "session_id",
            "user_id",
            "latency_ms",
            "topic",
            "model_version",
        }

    def test_iter_interactions_yields_the_records_of_clean_files(
        self, clean: tuple[Path, SimulationConfig]
    ) -> None:
        out, config = clean

        held = list(iter_interactions(config))
        support = [json.loads(line) for _, line in _lines(out, SUPPORT)]
        sales = [json.loads(line) for _, line in _lines(out, SALES)]

        assert held[: len(support)] == support
        assert [record["request_id"] for record in held[len(support) :]] == [
            line["id"] for line in sales
        ]
        assert (
            held[-1]["response"]
            == sales[-1]["response"]["choices"][0]["message"]["content"]
        )

    def test_messages_end_with_the_user_turn_and_never_hold_the_answer(
        self, week: list[dict[str, Any]]
    ) -> None:
        last_roles = Counter(record["messages"][-1]["role"] for record in week)
        first_turns = [
            r for r in week if sum(m["role"] == "user" for m in r["messages"]) == 1
        ]
        echoed = sum(
            r["response"] in (m["content"] for m in r["messages"]) for r in first_turns
        )

        assert last_roles == {"user": len(week)}
        assert echoed == 0

    def test_later_turns_carry_the_earlier_turns_of_their_session(
        self, week: list[dict[str, Any]]
    ) -> None:
        sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in week:
            sessions[record["session_id"]].append(record)
        lengths = Counter(len(turns) for turns in sessions.values())

        for turns in sessions.values():
            for earlier, later in itertools.pairwise(turns):
                answered = [
                    *earlier["messages"],
                    {"role": "assistant", "content": earlier["response"]},
                ]
                assert later["messages"][: len(answered)] == answered
                assert len(later["messages"]) == len(answered) + 1
        assert set(lengths) == {1, 2, 3, 4}

    def test_users_come_back_with_a_heavy_tail_of_activity(
        self, week: list[dict[str, Any]]
    ) -> None:
        sessions_per_user = Counter(
            user for user, _ in {(r["user_id"], r["session_id"]) for r in week}
        )
        counts = sorted(sessions_per_user.values(), reverse=True)

        assert counts[0] >= 10 * statistics.median(counts)
        assert sum(count > 1 for count in counts) > len(counts) / 4

    def test_latency_median_is_between_600_and_1500_ms(
        self, week: list[dict[str, Any]]
    ) -> None:
        latency = [record["latency_ms"] for record in week]

        assert 600 < statistics.median(latency) < 1500
        assert max(latency) > 3 * statistics.median(latency)

    def test_token_counts_follow_text_length(self, week: list[dict[str, Any]]) -> None:
        for record in week[:2000]:
            prompt_chars = sum(len(m["content"]) for m in record["messages"])
            assert abs(record["completion_tokens"] - len(record["response"]) / 4) <= 1
            assert (
                prompt_chars / 4
                <= record["prompt_tokens"]
                <= prompt_chars / 4 + 5 * len(record["messages"])
            )

    def test_feedback_is_sparse_and_human_corrections_rarer(
        self, week: list[dict[str, Any]]
    ) -> None:
        feedback = Counter(record["feedback"] for record in week)
        corrected = [r for r in week if r["corrected_response"] is not None]
        rated = len(week) - feedback[None]

        assert set(feedback) == {None, 1, -1}
        assert 0.06 < rated / len(week) < 0.10
        assert 0.01 < len(corrected) / len(week) < 0.02
        assert sum(r["feedback"] == -1 for r in corrected) > len(corrected) / 2
        assert any(r["feedback_comment"] for r in week if r["feedback"] == -1)

    def test_support_covers_ten_topics_each_asked_in_many_ways(
        self, week: list[dict[str, Any]]
    ) -> None:
        openers: dict[str, set[str]] = defaultdict(set)
        for record in week:
            if sum(m["role"] == "user" for m in record["messages"]) == 1:
                openers[record["topic"]].add(_prompt(record))

        assert set(openers) == SUPPORT_TOPICS
        assert min(len(prompts) for prompts in openers.values()) >= 30

    def test_first_answers_of_a_topic_share_a_few_templated_openings(
        self, week: list[dict[str, Any]]
    ) -> None:
        openings: dict[str, Counter[str]] = defaultdict(Counter)
        for record in week:
            if sum(m["role"] == "user" for m in record["messages"]) == 1:
                words = re.sub(r"\S*\d\S*", "<n>", record["response"]).split()
                openings[record["topic"]][" ".join(words[:3])] += 1

        covered = {
            topic: sum(n for _, n in counts.most_common(3)) / counts.total()
            for topic, counts in openings.items()
        }

        assert set(covered) == SUPPORT_TOPICS
        assert min(covered.values()) > 0.85


class TestScenarios:
    def test_new_topic_prompts_appear_only_from_drift_day_at_about_drift_share(
        self,
    ) -> None:
        config = SimulationConfig(
            days=3, per_day=4_000, scenario="new-topic", drift_day=1
        )
        by_day: dict[date, list[dict[str, Any]]] = defaultdict(list)
        for record in iter_interactions(config):
            by_day[_day_of(record)].append(record)

        def share(day: date) -> float:
            new = [r for r in by_day[day] if r["topic"] == "aurora_hub"]
            return len(new) / len(by_day[day])

        mentions = [
            r for r in by_day[START] if "aurora" in json.dumps(r["messages"]).lower()
        ]
        assert mentions == []
        assert share(START) == 0
        assert abs(share(START + timedelta(days=1)) - 0.15) < 0.03
        assert abs(share(START + timedelta(days=2)) - 0.15) < 0.03

    def test_new_topic_draws_more_thumbs_down_and_refusals_than_old_topics(
        self,
    ) -> None:
        config = SimulationConfig(
            days=2, per_day=10_000, scenario="new-topic", drift_day=1, drift_share=0.3
        )
        records = [r for r in iter_interactions(config) if _day_of(r) > START]
        new = [r for r in records if r["topic"] == "aurora_hub"]
        old = [r for r in records if r["topic"] != "aurora_hub"]

        def down(rs: list[dict[str, Any]]) -> float:
            return sum(r["feedback"] == -1 for r in rs) / len(rs)

        def refused(rs: list[dict[str, Any]]) -> float:
            return sum(r["response"] in REFUSED for r in rs) / len(rs)

        first_turns = [r for r in new if len(r["messages"]) <= 2]
        named = sum("aurora" in _prompt(r).lower() for r in first_turns)
        assert named > 0.9 * len(first_turns)
        assert down(new) > 3 * down(old)
        assert refused(new) > 0.5
        assert refused(old) < 0.05

    def test_quality_drop_brings_refusals_thumbs_down_and_slower_answers(
        self,
    ) -> None:
        config = SimulationConfig(
            days=2, per_day=6_000, scenario="quality-drop", drift_day=1
        )
        before, after = [], []
        for record in iter_interactions(config):
            (before if _day_of(record) == START else after).append(record)

        def refusals(rs: list[dict[str, Any]]) -> float:
            return sum(
                r["response"].startswith("I'm sorry, I can't") for r in rs
            ) / len(rs)

        def down(rs: list[dict[str, Any]]) -> float:
            return sum(r["feedback"] == -1 for r in rs) / len(rs)

        def median_latency(rs: list[dict[str, Any]]) -> float:
            return statistics.median(r["latency_ms"] for r in rs)

        assert refusals(after) > 5 * refusals(before)
        assert down(after) > 2.5 * down(before)
        assert median_latency(after) > 1.4 * median_latency(before)
        assert {r["model_version"] for r in before} != {
            r["model_version"] for r in after
        }

    def test_language_shift_brings_a_growing_share_of_spanish_and_german(
        self,
    ) -> None:
        config = SimulationConfig(
            days=4, per_day=3_000, scenario="language-shift", drift_day=1
        )
        shares: dict[date, float] = {}
        foreign: list[dict[str, Any]] = []
        by_day: dict[date, list[dict[str, Any]]] = defaultdict(list)
        for record in iter_interactions(config):
            by_day[_day_of(record)].append(record)
        for day, records in by_day.items():
            other = [r for r in records if r["locale"][:2] in ("es", "de")]
            shares[day] = len(other) / len(records)
            foreign += other
        english = {_prompt(r) for r in by_day[START]}
        accented = sum(not _prompt(r).isascii() for r in foreign)

        assert shares[START] == 0
        assert 0.1 < shares[START + timedelta(days=1)] < 0.2
        assert (
            shares[START + timedelta(days=3)] > shares[START + timedelta(days=2)] > 0.25
        )
        assert english.isdisjoint(_prompt(r) for r in foreign)
        assert accented > 0.5 * len(foreign)
        assert {r["topic"] for r in foreign} == SUPPORT_TOPICS


class TestPlantedPii:
    def test_planted_card_numbers_pass_luhn_and_appear_in_the_files(
        self, dirty: tuple[Path, SimulationSummary]
    ) -> None:
        out, summary = dirty
        planted = json.loads(summary.manifest.read_bytes())["planted_pii"]
        files = b"".join(path.read_bytes() for path in sorted(out.rglob("*.jsonl")))

        cards = [item["value"] for item in planted if item["kind"] == "card"]

        assert len(cards) > 50
        assert all(_passes_luhn(card) for card in cards)
        assert all(card.encode() in files for card in cards)

    def test_every_planted_item_sits_in_the_prompt_of_its_record(
        self, dirty: tuple[Path, SimulationSummary]
    ) -> None:
        out, summary = dirty
        planted = json.loads(summary.manifest.read_bytes())["planted_pii"]
        prompts = {
            record["request_id"]: _prompt(record)
            for model in BOTH
            for record in _records(out, model)
        }

        assert len(planted) == summary.planted_pii
        assert all(item["value"] in prompts[item["request_id"]] for item in planted)

    def test_about_three_percent_of_prompts_carry_every_kind_of_pii(
        self, dirty: tuple[Path, SimulationSummary]
    ) -> None:
        _, summary = dirty
        planted = json.loads(summary.manifest.read_bytes())["planted_pii"]

        kinds = Counter(item["kind"] for item in planted)

        assert 0.02 < summary.planted_pii / summary.records < 0.04
        assert set(kinds) == {"email", "phone", "card", "iban", "api_key"}

    def test_planted_ibans_carry_valid_check_digits(
        self, dirty: tuple[Path, SimulationSummary]
    ) -> None:
        _, summary = dirty
        planted = json.loads(summary.manifest.read_bytes())["planted_pii"]

        ibans = [
            item["value"].replace(" ", "") for item in planted if item["kind"] == "iban"
        ]
        remainders = {
            int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97
            for iban in ibans
        }

        assert len(ibans) > 10
        assert remainders == {1}


class TestFaults:
    def test_every_malformed_kind_appears_and_matches_the_manifest(
        self, dirty: tuple[Path, SimulationSummary]
    ) -> None:
        out, summary = dirty
        manifest = json.loads(summary.manifest.read_bytes())

        found = Counter(_kind(line) for model in BOTH for _, line in _lines(out, model))
        del found["ok"]

        assert set(found) == set(MALFORMED_KINDS)
        assert found == manifest["malformed"]
        assert sum(found.values()) == summary.malformed
        assert 0.001 < summary.malformed / summary.records < 0.004

    def test_retried_lines_repeat_records_some_in_the_next_hour_file(
        self, dirty: tuple[Path, SimulationSummary]
    ) -> None:
        out, summary = dirty
        first_seen: dict[bytes, Path] = {}
        repeats: list[tuple[Path, Path]] = []
        for model in BOTH:
            for path, line in _lines(out, model):
                if line in first_seen:
                    repeats.append((first_seen[line], path))
                else:
                    first_seen[line] = path

        assert len(repeats) == summary.duplicates
        assert 0.002 < summary.duplicates / summary.records < 0.004
        assert any(later != first for first, later in repeats)
        assert any(later == first for first, later in repeats)

    def test_clean_traffic_has_no_malformed_or_repeated_lines(
        self, clean: tuple[Path, SimulationConfig]
    ) -> None:
        out, _ = clean
        manifest = json.loads((out / "_simulation.json").read_bytes())

        lines = [line for model in BOTH for _, line in _lines(out, model)]

        assert {_kind(line) for line in lines} == {"ok"}
        assert len(set(lines)) == len(lines)
        assert manifest["duplicates"] == 0
        assert set(manifest["malformed"].values()) == {0}


class TestManifest:
    def test_manifest_counts_topics_per_day_and_records_the_config(
        self, clean: tuple[Path, SimulationConfig]
    ) -> None:
        out, config = clean
        manifest = json.loads((out / "_simulation.json").read_bytes())

        days = manifest["topics"][SUPPORT]

        assert manifest["config"]["per_day"] == config.per_day
        assert manifest["config"]["start"] == "2026-11-01"
        assert manifest["records"] == 2 * 2 * config.per_day
        assert sorted(days) == ["2026-11-01", "2026-11-02"]
        assert all(sum(counts.values()) == config.per_day for counts in days.values())
        assert set(days["2026-11-01"]) == SUPPORT_TOPICS


class TestConfig:
    @pytest.mark.parametrize(
        ("settings", "field"),
        [
            ({"days": 0}, "days"),
            ({"per_day": -5}, "per_day"),
            ({"seed": -1}, "seed"),
            ({"scenario": "drift"}, "scenario"),
            ({"scenario": "new-topic", "days": 3, "drift_day": 3}, "drift_day"),
            ({"drift_share": 1.5}, "drift_share"),
            ({"start": datetime(2026, 11, 1)}, "start"),
            ({"models": ("chat-assistant",)}, "models"),
            ({"models": (SUPPORT, SUPPORT)}, "models"),
            ({"malformed": "yes"}, "malformed"),
        ],
    )
    def test_an_invalid_setting_is_refused_naming_its_field(
        self, settings: dict[str, Any], field: str
    ) -> None:
        with pytest.raises(ValueError, match=rf"SimulationConfig\.{field} must be"):
            SimulationConfig(**settings)

    def test_the_refusal_says_what_was_expected_and_what_came(self) -> None:
        with pytest.raises(ConfigError) as refused:
            SimulationConfig(per_day=0)

        assert str(refused.value) == (
            "SimulationConfig.per_day must be an integer >= 1, got 0; "
            "set per_day to such a value."
        )


CANARY = "driftloop-support-assistant/2"
VERSION = VERSIONS[SUPPORT][0]


def _by_version(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record["model_version"]].append(record)
    return groups


def _canary_day(**effect: float) -> dict[str, list[dict[str, Any]]]:
    config = SimulationConfig(
        days=1,
        per_day=20_000,
        seed=11,
        canary_version=CANARY,
        canary_share=0.5,
        **effect,
    )
    return _by_version(list(iter_interactions(config)))


class TestCanary:
    def test_a_canary_serves_about_its_share_of_sessions_from_its_day_on(self) -> None:
        config = SimulationConfig(
            days=2, per_day=4_000, canary_version=CANARY, canary_share=0.3, canary_day=1
        )
        records = list(iter_interactions(config))
        sessions: dict[date, dict[str, set[str]]] = defaultdict(
            lambda: defaultdict(set)
        )
        for record in records:
            sessions[_day_of(record)][record["session_id"]].add(record["model_version"])
        first, second = (sessions[START + timedelta(days=d)] for d in (0, 1))

        served = list(second.values())
        canary = sum(labels == {CANARY} for labels in served) / len(served)

        assert all(CANARY not in labels for labels in first.values())
        assert all(len(labels) == 1 for labels in served)
        assert 0.27 < canary < 0.33

    def test_days_before_the_canary_day_are_identical_to_a_run_without_one(
        self, tmp_path: Path
    ) -> None:
        base = {"days": 2, "per_day": 500}
        simulate(tmp_path / "none", SimulationConfig(**base))
        simulate(
            tmp_path / "canary",
            SimulationConfig(**base, canary_version=CANARY, canary_day=1),
        )

        none, canary = _files(tmp_path / "none"), _files(tmp_path / "canary")
        day0 = [name for name in none if "2026-11-01" in name]

        assert len(day0) == 24
        assert all(none[name] == canary[name] for name in day0)
        assert any(CANARY.encode() in body for body in canary.values())

    def test_the_manifest_records_the_canary_only_when_there_is_one(
        self, tmp_path: Path
    ) -> None:
        simulate(tmp_path / "none", SimulationConfig(days=1, per_day=100))
        simulate(
            tmp_path / "canary",
            SimulationConfig(days=1, per_day=100, canary_version=CANARY),
        )

        def config(out: Path) -> dict[str, Any]:
            return json.loads((out / "_simulation.json").read_bytes())["config"]

        assert not [k for k in config(tmp_path / "none") if k.startswith("canary")]
        assert config(tmp_path / "canary")["canary_version"] == CANARY

    def test_a_worse_canary_draws_more_thumbs_down_and_fewer_resolved_outcomes(
        self,
    ) -> None:
        groups = _canary_day(canary_failure_factor=6.0)

        def rates(records: list[dict[str, Any]]) -> tuple[float, float]:
            rated = [r["feedback"] for r in records if r["feedback"] is not None]
            resolved = sum(r["task_outcome"] == "resolved" for r in records)
            return rated.count(-1) / len(rated), resolved / len(records)

        canary, champion = rates(groups[CANARY]), rates(groups[VERSION])

        assert canary[0] > champion[0] + 0.15
        assert canary[1] < champion[1] - 0.07

    def test_a_better_canary_draws_fewer_corrections_and_more_resolved_outcomes(
        self,
    ) -> None:
        groups = _canary_day(canary_failure_factor=0.1)

        def rates(records: list[dict[str, Any]]) -> tuple[float, float]:
            corrected = sum(r["corrected_response"] is not None for r in records)
            resolved = sum(r["task_outcome"] == "resolved" for r in records)
            return corrected / len(records), resolved / len(records)

        canary, champion = rates(groups[CANARY]), rates(groups[VERSION])

        assert canary[0] < 0.85 * champion[0]
        assert canary[1] > champion[1] + 0.01

    def test_a_slower_canary_answers_slower_by_its_factor(self) -> None:
        groups = _canary_day(canary_latency_factor=1.5)

        def median(records: list[dict[str, Any]]) -> float:
            return statistics.median(r["latency_ms"] for r in records)

        ratio = median(groups[CANARY]) / median(groups[VERSION])

        assert 1.4 < ratio < 1.6

    @pytest.mark.parametrize(
        ("settings", "field"),
        [
            ({"canary_version": ""}, "canary_version"),
            ({"canary_version": CANARY, "canary_share": 0}, "canary_share"),
            ({"canary_version": CANARY, "canary_share": 1.0}, "canary_share"),
            ({"canary_version": CANARY, "days": 2, "canary_day": 2}, "canary_day"),
            ({"canary_version": CANARY, "canary_day": -1}, "canary_day"),
            ({"canary_version": CANARY, "canary_failure_factor": 0}, "canary_failure"),
            ({"canary_version": CANARY, "canary_latency_factor": -1}, "canary_latency"),
        ],
    )
    def test_an_invalid_canary_setting_is_refused_naming_its_field(
        self, settings: dict[str, Any], field: str
    ) -> None:
        with pytest.raises(ValueError, match=rf"SimulationConfig\.{field}\w* must be"):
            SimulationConfig(**settings)

    def test_a_canary_refusal_says_what_was_expected_and_what_came(self) -> None:
        with pytest.raises(ConfigError) as refused:
            SimulationConfig(canary_version=CANARY, canary_share=1.5)

        assert str(refused.value) == (
            "SimulationConfig.canary_share must be a number strictly between 0 and 1, "
            "got 1.5; set canary_share to such a value."
        )
