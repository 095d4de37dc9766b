"""The PII scrubber: exact placeholders, checksums, measured recall, and failing closed.

`pytest -s tests/tasks/test_pii.py` prints the recall and precision table measured on
tests/data/pii_labelled.jsonl.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftloop.errors import ConfigError
from tasks.pii import (
    KINDS,
    PLACEHOLDERS,
    PiiMatch,
    Scrubber,
    find_pii,
    residual_pii,
    scrub,
    scrub_with_counts,
)

SAMPLE = Path(__file__).parents[1] / "data" / "pii_labelled.jsonl"
OVERALL_RECALL_FLOOR = 0.98
KIND_RECALL_FLOOR = 0.95
PRECISION_FLOOR = 0.95


def luhn_valid(digits: str) -> bool:
    """Check a card number the textbook way, independently of tasks.pii."""
    doubled = [int(d) * (1 + i % 2) for i, d in enumerate(reversed(digits))]
    return sum(d // 10 + d % 10 for d in doubled) % 10 == 0


def iban_valid(iban: str) -> bool:
    """Check IBAN digits with mod-97, independently of tasks.pii."""
    s = re.sub(r"[ -]", "", iban).upper()
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def with_check_digits(country: str, bban: str) -> str:
    """Build an IBAN-shaped code whose check digits pass mod-97."""
    moved = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(moved) % 97:02d}{bban}"


def luhn_complete(body: str) -> str:
    """Append the digit that makes body pass the Luhn check."""
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


# --- the labelled sample -----------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    values: Counter[str]  # labelled values per kind
    removed: Counter[str]  # of those, the ones absent from the scrubbed text
    matches: Counter[str]  # matches per kind over the whole sample
    true_matches: Counter[str]  # of those, the ones on a labelled value of that kind
    negatives: int
    negatives_untouched: int

    def recall(self, kind: str | None = None) -> float:
        if kind is None:
            return sum(self.removed.values()) / sum(self.values.values())
        return self.removed[kind] / self.values[kind]

    def precision(self, kind: str | None = None) -> float:
        if kind is None:
            return sum(self.true_matches.values()) / sum(self.matches.values())
        return self.true_matches[kind] / self.matches[kind] if self.matches[kind] else 1


def load_sample() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines()]


def measure(rows: list[dict[str, Any]]) -> Figures:
    values, removed, matches, true_matches = Counter(), Counter(), Counter(), Counter()
    negatives = untouched = 0
    for row in rows:
        text, labels = row["text"], row["pii"]
        scrubbed = scrub(text)
        spans = [(p["kind"], text.find(p["value"]), len(p["value"])) for p in labels]
        for p in labels:
            values[p["kind"]] += 1
            removed[p["kind"]] += p["value"] not in scrubbed
        for m in find_pii(text):
            matches[m.kind] += 1
            true_matches[m.kind] += any(
                kind == m.kind and start < m.end and m.start < start + size
                for kind, start, size in spans
            )
        if not labels:
            negatives += 1
            untouched += scrubbed == text
    return Figures(values, removed, matches, true_matches, negatives, untouched)


def table(figures: Figures) -> str:
    lines = [f"{'kind':<16}{'values':>7}{'recall':>8}{'matches':>9}{'precision':>11}"]
    for kind in KINDS:
        lines.append(
            f"{kind:<16}{figures.values[kind]:>7}{figures.recall(kind):>8.3f}"
            f"{figures.matches[kind]:>9}{figures.precision(kind):>11.3f}"
        )
    lines.append(
        f"{'all':<16}{sum(figures.values.values()):>7}{figures.recall():>8.3f}"
        f"{sum(figures.matches.values()):>9}{figures.precision():>11.3f}"
    )
    lines.append(
        f"hard negatives left untouched: {figures.negatives_untouched}"
        f"/{figures.negatives}"
    )
    return "\n".join(lines)


@pytest.fixture(scope="module")
def figures() -> Figures:
    measured = measure(load_sample())
    print("\n" + table(measured))
    return measured


class TestLabelledSample:
    def test_every_labelled_value_occurs_in_its_text(self) -> None:
        for row in load_sample():
            for p in row["pii"]:
                assert p["kind"] in KINDS, row
                assert p["value"] in row["text"], row

    def test_it_holds_300_texts_a_third_of_them_hard_negatives(self) -> None:
        rows = load_sample()
        kinds = Counter(p["kind"] for row in rows for p in row["pii"])
        assert len(rows) >= 300
        assert sum(not row["pii"] for row in rows) >= 100
        assert min(kinds[kind] for kind in KINDS) >= 15, kinds

    def test_its_cards_pass_luhn_and_its_ibans_pass_mod_97(self) -> None:
        labels = [p for row in load_sample() for p in row["pii"]]
        for p in labels:
            if p["kind"] == "CARD":
                assert luhn_valid(re.sub(r"[ -]", "", p["value"])), p
            if p["kind"] == "IBAN":
                assert iban_valid(p["value"]), p

    def test_overall_recall_is_at_least_0_98(self, figures: Figures) -> None:
        assert figures.recall() >= OVERALL_RECALL_FLOOR, table(figures)

    @pytest.mark.parametrize("kind", KINDS)
    def test_recall_of_each_kind_is_at_least_0_95(
        self, figures: Figures, kind: str
    ) -> None:
        assert figures.recall(kind) >= KIND_RECALL_FLOOR, table(figures)

    def test_precision_of_matches_is_at_least_0_95(self, figures: Figures) -> None:
        assert figures.precision() >= PRECISION_FLOOR, table(figures)

    def test_hard_negatives_are_left_untouched(self, figures: Figures) -> None:
        share = figures.negatives_untouched / figures.negatives
        assert share >= PRECISION_FLOOR, table(figures)


# --- one sentence per placeholder ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("email j.doe+test@example.co.uk today", "email <EMAIL> today"),
        (
            "call me on +44 20 7946 0958 or (555) 010-4477",
            "call me on <PHONE> or <PHONE>",
        ),
        ("my card is 4111 1111 1111 1111, exp 08/29", "my card is <CARD>, exp 08/29"),
        ("refund to GB82 WEST 1234 5698 7654 32 please", "refund to <IBAN> please"),
        ("my ssn is 078-05-1120.", "my ssn is <SSN>."),
        ("from 203.0.113.7 and 2001:db8::1.", "from <IP> and <IP>."),
        (
            "key AKIAIOSFODNN7EXAMPLE and Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln",
            "key <API_KEY> and Authorization: Bearer <API_KEY>",
        ),
        (
            "open https://admin:hunter2@db.example.com/x, it fails",
            "open <URL_CREDENTIALS>, it fails",
        ),
    ],
    ids=list(KINDS),
)
def test_each_kind_is_replaced_by_its_placeholder(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_secrets_after_key_words_are_replaced_but_the_words_stay() -> None:
    text = "password: Summer2024! api_key=9fQ2xLr7TmB4vK8sWz3N"
    assert scrub(text) == "password: <API_KEY> api_key=<API_KEY>"


def test_a_key_word_followed_by_plain_words_is_left_alone() -> None:
    text = "my password is incorrect and the token limit is 4096"
    assert scrub(text) == text


# --- what is not PII ----------------------------------------------------------------


class TestValidation:
    def test_a_luhn_failing_number_is_neither_a_card_nor_a_phone(self) -> None:
        assert find_pii("card 4111 1111 1111 1112 was declined") == []
        assert find_pii("card 4111111111111112 was declined") == []

    def test_an_iban_with_a_wrong_check_digit_is_not_an_iban(self) -> None:
        assert find_pii("IBAN DE89 3704 0044 0532 0130 00")[0].kind == "IBAN"
        assert find_pii("IBAN DE88 3704 0044 0532 0130 00") == []

    def test_a_tracking_code_passing_mod_97_is_not_an_iban(self) -> None:
        # DHL codes are JD + 18 digits; JD is no country, whatever mod-97 says.
        code = with_check_digits("JD", "156117923449718948")
        assert find_pii(f"tracking {code}") == []

    @pytest.mark.parametrize(
        "ssn", ["999-12-3456", "900-12-3456", "000-12-3456", "666-12-3456"]
    )
    def test_an_ssn_in_area_000_666_or_9xx_is_not_an_ssn(self, ssn: str) -> None:
        assert find_pii(f"my ssn is {ssn}") == []

    @pytest.mark.parametrize("ssn", ["123-00-4567", "123-45-0000"])
    def test_an_ssn_with_a_zero_group_or_serial_is_not_an_ssn(self, ssn: str) -> None:
        assert find_pii(f"my ssn is {ssn}") == []

    @pytest.mark.parametrize("ip", ["256.1.1.1", "1.2.3.256", "300.200.100.50"])
    def test_an_octet_above_255_is_not_an_ip(self, ip: str) -> None:
        assert find_pii(f"server {ip} is down") == []

    @pytest.mark.parametrize(
        "text", ["at 10:30:45 UTC", "MAC 00:1A:2B:3C:4D:5E", "std::vector", "bad::"]
    )
    def test_times_macs_and_scoped_names_are_not_ipv6(self, text: str) -> None:
        assert find_pii(text) == []

    @pytest.mark.parametrize(
        "text",
        [
            "order #123456 cost $1,299.00",
            "delivery on 2026-11-02 at 10:30",
            "the event starts 02.11.2026 14:05",
            "version 3.2.1, build 2026.11.0",
            "ISBN 978-0-306-40615-7",
            "part PN 12-3456-7890",
            "FedEx tracking 001029950929",
            "the icon logo@2x.png is blurry",
            "is the sk-learn-compatible-pipeline supported",
        ],
    )
    def test_numbers_that_only_look_like_pii_are_left_alone(self, text: str) -> None:
        assert scrub(text) == text


# --- overlaps -----------------------------------------------------------------------


class TestOverlap:
    def test_a_card_is_reported_once_as_a_card_not_as_a_phone(self) -> None:
        text = "call 4111 1111 1111 1111"
        assert find_pii(text) == [PiiMatch("CARD", 5, 24)]

    def test_credentials_in_a_url_win_over_the_email_inside_it(self) -> None:
        text = "https://admin:hunter2@db.example.com/x"
        assert find_pii(text) == [PiiMatch("URL_CREDENTIALS", 0, len(text))]

    def test_a_valid_iban_wins_over_the_digits_inside_it(self) -> None:
        text = "NL91 ABNA 0417 1643 00"
        assert find_pii(text) == [PiiMatch("IBAN", 0, len(text))]


# --- counting and re-checking -------------------------------------------------------


def test_scrub_with_counts_counts_each_kind_and_zero_for_the_rest() -> None:
    text = "mail a@example.com or b@example.org, card 4111111111111111"
    scrubbed, counts = scrub_with_counts(text)
    assert scrubbed == "mail <EMAIL> or <EMAIL>, card <CARD>"
    assert counts == dict.fromkeys(KINDS, 0) | {"EMAIL": 2, "CARD": 1}


def test_pii_glued_to_other_pii_is_caught_in_a_later_round() -> None:
    text = "(555) 010-4477 4111 1111 1111 1111"
    assert [m.kind for m in find_pii(text)] == ["CARD"]
    assert scrub(text) == "<PHONE> <CARD>"


def test_residual_pii_flags_unscrubbed_text_and_nothing_once_scrubbed() -> None:
    text = "reach me at +1-202-555-0143"
    assert residual_pii(text) == [PiiMatch("PHONE", 12, 27)]
    assert residual_pii(scrub(text)) == []


# --- properties ---------------------------------------------------------------------

# Characters that PII patterns are made of, so random text often comes close to PII.
NEAR_PII = st.text(
    st.sampled_from(list("0123456789 .-+()@:/_#=<>xkAIKSsaetp\n")), max_size=120
)
ANY_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=200), NEAR_PII
)
# Filler around planted values: anything but ASCII digits, since a planted number next
# to other digits is one longer number, not the planted one.
FILLER = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="0123456789"),
    max_size=30,
)
LOCAL = st.from_regex(
    r"[A-Za-z0-9_%+-]{1,12}(\.[A-Za-z0-9_%+-]{1,12}){0,2}", fullmatch=True
)
DOMAIN = st.from_regex(
    r"([a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\.){1,3}[a-z]{2,8}", fullmatch=True
)
EMAILS = st.one_of(st.builds("{}@{}".format, LOCAL, DOMAIN), st.emails())


@st.composite
def cards(draw: st.DrawFn) -> str:
    length = draw(st.integers(13, 19))
    body = draw(
        st.text(st.sampled_from("0123456789"), min_size=length - 1, max_size=length - 1)
    )
    number = luhn_complete(body)
    if len(set(number)) == 1:
        number = luhn_complete("4" + body[1:])  # 0000 0000 0000 0000 is a dummy
    spacing = draw(st.sampled_from(["plain", "space", "dash", "amex"]))
    if spacing == "amex" and length == 15:
        return f"{number[:4]} {number[4:10]} {number[10:]}"
    if spacing in {"space", "dash"}:
        sep = " " if spacing == "space" else "-"
        return sep.join(number[i : i + 4] for i in range(0, length, 4))
    return number


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from("0123456789"), min_size=n, max_size=n)


PHONES = st.one_of(
    st.builds("({}) {}-{}".format, digits(3), digits(3), digits(4)),
    st.builds("{}-{}-{}".format, digits(3), digits(3), digits(4)),
    st.builds("{}.{}.{}".format, digits(3), digits(3), digits(4)),
    st.builds("+1 {} {} {}".format, digits(3), digits(3), digits(4)),
    st.builds("+44 20 {} {}".format, digits(4), digits(4)),
    st.builds("+{} {} {}".format, st.integers(1, 99), digits(3), digits(6)),
    st.builds("07{} {}".format, digits(3), digits(6)),
    st.builds("0{} {} {}".format, digits(2), digits(4), digits(4)),
    st.builds("0{} {} {} {} {}".format, st.sampled_from("1234567"), *[digits(2)] * 4),
)


class TestProperties:
    @given(ANY_TEXT)
    def test_scrub_never_raises_and_is_idempotent(self, text: str) -> None:
        once = scrub(text)
        assert scrub(once) == once

    @given(ANY_TEXT)
    def test_matches_are_ordered_and_never_overlap(self, text: str) -> None:
        matches = find_pii(text)
        for before, after in itertools.pairwise(matches):
            assert before.start < before.end <= after.start < after.end

    @given(
        st.lists(st.sampled_from([*PLACEHOLDERS.values(), " ", ": ", "=", "@", "."]))
    )
    def test_placeholders_hold_no_pii_alone_or_side_by_side(
        self, pieces: list[str]
    ) -> None:
        assert find_pii("".join(pieces)) == []

    @given(FILLER, EMAILS, FILLER)
    def test_no_planted_email_survives(
        self, before: str, value: str, after: str
    ) -> None:
        assert value not in scrub(f"{before} {value} {after}")

    @given(FILLER, cards(), FILLER)
    def test_no_planted_card_survives(
        self, before: str, value: str, after: str
    ) -> None:
        assert value not in scrub(f"{before} {value} {after}")

    @given(FILLER, PHONES, FILLER)
    def test_no_planted_phone_survives(
        self, before: str, value: str, after: str
    ) -> None:
        assert value not in scrub(f"{before} {value} {after}")


# --- the Presidio backend -----------------------------------------------------------


@dataclass(frozen=True)
class Result:
    entity_type: str
    start: int
    end: int
    score: float


class NameAnalyzer:
    """Stand in for Presidio's AnalyzerEngine, which this environment does not have.

    It answers the way AnalyzerEngine.analyze does: a list of results carrying
    entity_type, start, end and score.
    """

    def __init__(self, names: list[str], score: float = 0.85) -> None:
        self.names, self.score, self.calls = names, score, 0

    def analyze(
        self, text: str, language: str, entities: list[str] | None = None
    ) -> list[Result]:
        self.calls += 1
        return [
            Result("PERSON", m.start(), m.end(), self.score)
            for name in self.names
            for m in re.finditer(re.escape(name), text)
        ]


class BrokenAnalyzer:
    def analyze(self, text: str, language: str, entities: list[str] | None = None):
        raise RuntimeError("spaCy model missing")


class TestScrubber:
    def test_the_regex_backend_needs_nothing_installed(self) -> None:
        scrubber = Scrubber("regex")
        assert scrubber.backend == "regex"
        assert scrubber.scrub("a@example.com") == "<EMAIL>"

    @pytest.mark.skipif(
        find_spec("presidio_analyzer") is not None, reason="presidio is installed"
    )
    def test_auto_falls_back_to_regexes_without_presidio(self) -> None:
        assert Scrubber().backend == "regex"

    @pytest.mark.skipif(
        find_spec("presidio_analyzer") is not None, reason="presidio is installed"
    )
    def test_the_presidio_backend_is_refused_with_a_fix_when_not_installed(
        self,
    ) -> None:
        with pytest.raises(ConfigError, match=r"install presidio-analyzer.*'regex'"):
            Scrubber("presidio")

    def test_an_unknown_backend_is_refused(self) -> None:
        with pytest.raises(ConfigError, match=r"unknown PII backend 'spacy'.*'regex'"):
            Scrubber("spacy")

    @pytest.mark.parametrize("score", [-0.1, 1.5])
    def test_a_min_score_outside_0_to_1_is_refused(self, score: float) -> None:
        with pytest.raises(ConfigError, match=rf"within \[0, 1\], got {score}"):
            Scrubber("regex", min_score=score)

    def test_an_analyzer_adds_names_while_the_regexes_still_run(self) -> None:
        scrubber = Scrubber("presidio", analyzer=NameAnalyzer(["Anna Smith"]))
        text = "Anna Smith paid with 4111 1111 1111 1111"
        assert scrubber.backend == "regex+presidio"
        assert scrubber.scrub_with_counts(text) == (
            "<PERSON> paid with <CARD>",
            dict.fromkeys(KINDS, 0) | {"CARD": 1, "PERSON": 1},
        )

    def test_analyzer_results_below_min_score_are_ignored(self) -> None:
        scrubber = Scrubber(
            "presidio", analyzer=NameAnalyzer(["Anna"], score=0.3), min_score=0.5
        )
        assert scrubber.scrub("Anna called") == "Anna called"

    def test_analyzer_spans_outside_the_text_are_ignored(self) -> None:
        class Stray(NameAnalyzer):
            def analyze(self, text: str, language: str, entities=None) -> list[Result]:
                return [Result("PERSON", 3, len(text) + 5, 0.9)]

        assert Scrubber("presidio", analyzer=Stray([])).scrub("hi there") == "hi there"

    def test_an_analyzer_tagging_placeholders_does_not_keep_the_loop_going(
        self,
    ) -> None:
        analyzer = NameAnalyzer(["Anna", "<PERSON>"])
        assert Scrubber("presidio", analyzer=analyzer).scrub("Anna") == "<PERSON>"
        assert analyzer.calls == 2

    def test_a_failing_analyzer_leaves_the_regexes_working_and_logs_no_text(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        scrubber = Scrubber("presidio", analyzer=BrokenAnalyzer())
        with caplog.at_level(logging.WARNING, logger="tasks.pii"):
            assert scrubber.scrub("mail a@example.com") == "mail <EMAIL>"
        assert scrubber.analyzer_failures >= 1
        assert "RuntimeError" in caplog.text
        assert "a@example.com" not in caplog.text
