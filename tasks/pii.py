"""Find personal data and secrets in free text and replace them with placeholders.

Regexes backed by checksums (Luhn for cards, mod-97 for IBANs) catch structured
identifiers and run on every text. They are blind to names and postal addresses; the
optional Presidio backend adds those, but it makes no recall guarantee, so it only ever
adds to what the regexes find. Scrubbing repeats until nothing is found, because a
number glued to another (a phone right before a card) only shows once its neighbour is
a placeholder; callers re-check with `residual_pii` and drop what still holds PII.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any, Literal, Protocol

from driftloop.errors import ConfigError

logger = logging.getLogger(__name__)

Backend = Literal["auto", "regex", "presidio"]

KINDS: dict[str, str] = {
    "EMAIL": "<EMAIL>",
    "PHONE": "<PHONE>",
    "CARD": "<CARD>",
    "IBAN": "<IBAN>",
    "SSN": "<SSN>",
    "IP": "<IP>",
    "API_KEY": "<API_KEY>",
    "URL_CREDENTIALS": "<URL_CREDENTIALS>",
}
# Presidio entities worth asking for, and the kind each becomes; names and places are
# what Presidio adds over the regexes.
PRESIDIO_KINDS: dict[str, str] = {
    "PERSON": "PERSON",
    "LOCATION": "LOCATION",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "SSN",
    "IP_ADDRESS": "IP",
}
PLACEHOLDERS: dict[str, str] = KINDS | {"PERSON": "<PERSON>", "LOCATION": "<LOCATION>"}
_PLACEHOLDER_TEXTS = frozenset(PLACEHOLDERS.values())
# On overlap the more specific kind wins (a checksum beats a digit layout), then the
# longer match.
_RANK = {
    kind: rank
    for rank, kind in enumerate(
        ["URL_CREDENTIALS", "API_KEY", "IBAN", "CARD", "EMAIL", "SSN", "IP", "PHONE"]
    )
}
# Each round leaves fewer characters outside placeholders, which no detector matches;
# the cap only bounds time on adversarial input.
_MAX_ROUNDS = 8


@dataclass(frozen=True)
class PiiMatch:
    """One span of personal data: its kind and its character offsets."""

    kind: str
    start: int
    end: int


Refine = Callable[[str, re.Match[str]], tuple[int, int] | None]


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    refine: Refine
    digit: bool = True  # run only on text holding a digit
    words: tuple[str, ...] = ()  # run only on text holding one of these, lowercased


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.ASCII | re.VERBOSE)


def _span(m: re.Match[str]) -> tuple[int, int]:
    return m.span("v") if "v" in m.re.groupindex else m.span()


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Countries that issue IBANs, in the registry or in national use: a tracking code such
# as JD + 18 digits passes mod-97 one time in 97.
_IBAN_COUNTRIES = frozenset((
    "AD", "AE", "AL", "AO", "AT", "AZ", "BA", "BE", "BF", "BG", "BH", "BI", "BJ", "BR",
    "BY", "CF", "CG", "CH", "CI", "CM", "CR", "CV", "CY", "CZ", "DE", "DJ", "DK", "DO",
    "DZ", "EE", "EG", "ES", "FI", "FK", "FO", "FR", "GA", "GB", "GE", "GI", "GL", "GQ",
    "GR", "GT", "GW", "HN", "HR", "HU", "IE", "IL", "IQ", "IR", "IS", "IT", "JO", "KM",
    "KW", "KZ", "LB", "LC", "LI", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MG",
    "MK", "ML", "MN", "MR", "MT", "MU", "MZ", "NE", "NI", "NL", "NO", "OM", "PK", "PL",
    "PS", "PT", "QA", "RO", "RS", "RU", "SA", "SC", "SD", "SE", "SI", "SK", "SM", "SN",
    "SO", "ST", "SV", "TD", "TG", "TL", "TN", "TR", "UA", "VA", "VG", "XK", "YE",
))  # fmt: skip


def _iban_ok(raw: str) -> bool:
    s = raw.replace(" ", "").replace("-", "").upper()
    if not (15 <= len(s) <= 34 and s[:2] in _IBAN_COUNTRIES and 2 <= int(s[2:4]) <= 98):
        return False
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def _char_classes(s: str) -> int:
    return (
        any(c.islower() for c in s)
        + any(c.isupper() for c in s)
        + any(c.isdigit() for c in s)
        + any(not c.isalnum() for c in s)
    )


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(k / n * math.log2(k / n) for k in Counter(s).values())


def _shrink(
    text: str, start: int, end: int, ok: Callable[[str], bool], seps: str
) -> tuple[int, int] | None:
    """Return the longest span from start, cut at a separator, that `ok` accepts."""
    while end > start:
        if ok(text[start:end]):
            return start, end
        end = max(text.rfind(c, start, end) for c in seps)
        while end > start and text[end - 1] in seps:
            end -= 1
    return None


def _url(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    start, end = m.span()
    while text[end - 1] in ".,;:!?)]}'\"":
        end -= 1
    return start, end


_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _prefixed_key(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    start = m.start()
    if start and text[start - 1] in _WORD:
        return None  # "risk-free..." holds sk- inside a word
    # sk- also starts hyphenated words; a real key mixes letters and digits.
    body = m.group("sk")
    if body and not (any(c.isdigit() for c in body) and any(c.isalpha() for c in body)):
        return None
    return m.span()


def _keyed_secret(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    start, end = m.span("v")
    while end > start and text[end - 1] in ".,;:)":
        end -= 1
    value = text[start:end]
    if m.group("pw"):
        # A password needs a digit or a symbol: "password: Incorrect" is a message.
        strong = any(not c.isalpha() for c in value)
        return (start, end) if len(value) >= 6 and strong else None
    long_random = len(value) >= 16 and _entropy(value) >= 3.0
    return (start, end) if long_random and _char_classes(value) >= 2 else None


def _auth_header(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    if m.group("basic"):
        return m.span("basic")
    return m.span("v") if _char_classes(m.group("v")) >= 2 else None


def _iban(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    # The match opens at the check digits; the country code sits just before them.
    return _shrink(text, m.start() - 2, m.end(), _iban_ok, " -")


def _card_ok(s: str) -> bool:
    groups = s.replace("-", " ").split(" ")
    digits = "".join(groups)
    return (
        13 <= len(digits) <= 19
        and all(len(g) >= 4 for g in groups[:-1])
        and len(set(digits)) > 1
        and _luhn_ok(digits)
    )


def _card(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    return _shrink(text, m.start(), m.end(), _card_ok, " -")


_LOCAL = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]"  # any RFC 5322 atom character, and dots
_FILE_SUFFIXES = {"png", "jpg", "jpeg", "gif", "svg", "webp", "pdf", "txt", "json"}


def _email(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    tld = m.group().rsplit(".", 1)[1].lower()
    return None if tld in _FILE_SUFFIXES else m.span()  # logo@2x.png is a file


def _ssn(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    start, end = _span(m)
    d = _digits(text[start:end])
    bad = d[:3] in {"000", "666"} or d[0] == "9" or d[3:5] == "00" or d[5:] == "0000"
    return None if bad else (start, end)


def _ipv4(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    return m.span() if all(int(o) <= 255 for o in m.group().split(".")) else None


def _ipv6(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    start, end = m.span()
    if text[end - 1] == ".":  # a sentence may end right after the address
        end -= 1
    candidate = text[start:end]
    if candidate.count(":") < 2 or not any(c.isdigit() for c in candidate):
        return None  # "bad::" and "cafe:babe:" are words, not addresses
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    return start, end


def _phone(low: int, high: int, shape: re.Pattern[str] | None = None) -> Refine:
    def ok(s: str) -> bool:
        return low <= len(_digits(s)) <= high and (shape is None or _shape_ok(shape, s))

    def refine(text: str, m: re.Match[str]) -> tuple[int, int] | None:
        start, end = _span(m)
        return _shrink(text, start, end, ok, " .-()")

    return refine


def _shape_ok(shape: re.Pattern[str], s: str) -> bool:
    # Mixed separators ("02.11.2026 14") are a date and a time, not one number.
    return shape.fullmatch(s) is not None and (
        s[0] != "0" or len({c for c in s if not c.isdigit()}) <= 1
    )


# North American (555) 010-4477, or a national number that starts with a trunk 0.
_LOCAL_PHONE = _compile(r"""
    (?:1[\ .-]?)? (?:\(\d{3}\)\ ?|\d{3}[\ .-]) \d{3}[\ .-]\d{4}
    | 0\d{1,4} (?:[\ .-]?\d{2,4}){2,4}
""")
_DATE = _compile(r"\d{4}-\d\d-\d\d | \d\d?[./-]\d\d?[./-]\d{4}")
_PLUS_PHONE = _phone(8, 15)  # E.164 allows at most 15 digits
_ZERO_ZERO_PHONE = _phone(10, 17, _compile(r"00\d+[\ .()-][\d\ .()-]+"))
_NATIONAL_PHONE = _phone(10, 11, _LOCAL_PHONE)
_CUED_PHONE = _phone(7, 15)


def _cued_phone(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    if _DATE.fullmatch(m.group("v")):
        return None  # "call back on 2026-11-02" names a day, not a number
    return _CUED_PHONE(text, m)


_PHONE_CUES = (
    "phone", "call", "tel", "mobile", "cell", "text", "whatsapp", "ring", "sms",
)  # fmt: skip
_KEY_WORDS = r"""
    api[_\ -]?key | apikey | access[_\ -]?key(?:[_-]?id)? | secret(?:[_\ -]?key)?
    | client[_-]?secret | (?:auth|access|refresh|session)[_-]?token | token
"""
# Each digit pattern opens with a plain character or class, which lets the regex engine
# skip straight to candidate characters; the left-boundary check therefore comes after
# that first character and looks back over it.
_RULES: tuple[_Rule, ...] = (
    _Rule(
        "URL_CREDENTIALS",
        _compile(r"""[A-Za-z](?<![\w+.-][A-Za-z]) [A-Za-z0-9+.-]{1,15} ://
            [^\s/?\#@<>:]* : [^\s/?\#<>]+ @ [^\s<>"'`]+"""),
        _url,
        digit=False,
        words=("://",),
    ),
    _Rule(
        "API_KEY",
        _compile(r"""(?:
              sk-(?P<sk>[A-Za-z0-9_-]{20,200})
            | sk_(?:live|test)_[A-Za-z0-9]{10,200}
            | pk_(?:live|test)_[A-Za-z0-9]{10,200}
            | rk_(?:live|test)_[A-Za-z0-9]{10,200}
            | A(?:KIA|SIA|IDA|ROA)[A-Z0-9]{16}
            | gh[pousr]_[A-Za-z0-9]{30,200}
            | github_pat_[A-Za-z0-9_]{30,200}
            | xox[abprs]-[A-Za-z0-9-]{10,200}
            | AIza[A-Za-z0-9_-]{35}
            | eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}
            | -----BEGIN[A-Z\ ]{0,20}PRIVATE\ KEY-----
              [\s\S]*?(?:-----END[A-Z\ ]{0,20}PRIVATE\ KEY-----|\Z)
            ) (?![A-Za-z0-9])"""),
        _prefixed_key,
        digit=False,
    ),
    _Rule(
        "API_KEY",
        _compile(rf"""(?i) (?<![A-Za-z0-9])
            (?: (?P<pw>password|passwd|pwd|passcode|passphrase|(?:pass|pw)(?=\s*[:=]))
              | {_KEY_WORDS} )
            [\w-]{{0,20}} ["']?
            (?: \s* (?: [:=]|=>|\bis\b|\bwas\b ) \s* | \s+ ) ["']?
            (?P<v>[A-Za-z0-9_~+/=!\#$%^&*.@-]{{6,200}})"""),
        _keyed_secret,
        digit=False,
        words=("pass", "pw", "key", "secret", "token"),
    ),
    _Rule(
        "API_KEY",
        _compile(r"""(?i) \bbearer \s+ (?P<v>[A-Za-z0-9._~+/=-]{12,})
            | authorization: \s* basic \s+ (?P<basic>[A-Za-z0-9+/]{8,}={0,2})"""),
        _auth_header,
        digit=False,
        words=("bearer", "basic"),
    ),
    _Rule(
        "IBAN",
        _compile(r"""\d(?<=[A-Za-z]{2}\d)(?<![\w-][A-Za-z]{2}\d) \d
            (?: [A-Za-z0-9]{11,30}
              | (?:[\ -][A-Za-z0-9]{4}){2,7} (?:[\ -][A-Za-z0-9]{1,4})? )
            (?![\w-])"""),
        _iban,
    ),
    _Rule(
        "CARD",
        _compile(r"\d(?<![\w-]\d) \d{0,18} (?:[\ -]\d{1,19}){0,6} (?![\w-])"),
        _card,
    ),
    _Rule(
        "EMAIL",
        _compile(rf"""{_LOCAL}(?<!{_LOCAL}{_LOCAL}) {_LOCAL}{{0,63}} @
            [A-Za-z0-9-]{{1,63}} (?:\.[A-Za-z0-9-]{{1,63}}){{0,126}}
            \.[A-Za-z][A-Za-z0-9-]{{1,62}} (?![\w-])"""),
        _email,
        digit=False,
        words=("@",),
    ),
    _Rule(
        "SSN",
        _compile(r"""\d(?<![\w-]\d)(?<!\d\ \d) \d{2}(?P<s>[-\ ])\d{2}(?P=s)\d{4}
            (?![\w-])(?!\ \d)"""),
        _ssn,
    ),
    _Rule(
        "SSN",
        _compile(r"""(?i) \b(?: ssn | social\ security(?:\ number|\ no\.?)? | ss\# )
            [\s:\#]* (?:is\s+)? (?P<v>\d{9}) (?!\d)"""),
        _ssn,
        words=("ssn", "social", "ss#"),
    ),
    _Rule(
        "IP",
        _compile(r"\d(?<![\w.]\d) \d{0,2} (?:\.\d{1,3}){3} (?!\w|\.\d)"),
        _ipv4,
        words=(".",),
    ),
    _Rule(
        "IP",
        _compile(r"""[0-9A-Fa-f:](?<![\w.][0-9A-Fa-f:]) (?=[0-9A-Fa-f:.]{0,44}:)
            [0-9A-Fa-f:.]{1,44} (?:%[A-Za-z0-9]{1,15})? (?![\w:])"""),
        _ipv6,
        words=(":",),
    ),
    _Rule(
        "PHONE",
        _compile(r"""\+(?<![\w+-]\+)(?<!\d[\ .-]\+) \d[\d\ ().-]{5,22}\d (?![\w-])"""),
        _PLUS_PHONE,
    ),
    _Rule(
        "PHONE",
        _compile(r"""0(?<![\w+-]0)(?<!\d[\ .-]0) 0[1-9][\d\ ().-]{4,21}\d (?![\w-])"""),
        _ZERO_ZERO_PHONE,
    ),
    _Rule(
        "PHONE",
        _compile(r"""[\d(](?<![\w+.-][\d(])(?<!\d\ [\d(]) [\d\ ().-]{7,16}\d
            (?![\w-]|[\ .]\d)"""),
        _NATIONAL_PHONE,
    ),
    _Rule(
        "PHONE",
        _compile(r"""(?i) \b(?:phone|call|tel|mobile|cell|text|whatsapp|ring|sms)\b
            [\s:.]* (?: (?:me|us|at|on|to|is|my|number|no\.?|nr|\#) [\s:.]* ){0,4}
            (?P<v>\d[\d\ ().-]{5,20}\d) (?![\w-])"""),
        _cued_phone,
        words=_PHONE_CUES,
    ),
)
_DIGIT = re.compile(r"\d", re.ASCII)


def _rule_matches(rule: _Rule, text: str) -> Iterator[PiiMatch]:
    search, pos = rule.pattern.search, 0
    while (m := search(text, pos)) is not None:
        span = rule.refine(text, m)
        if span is None:
            pos = m.start() + 1  # a rejected candidate may hide a valid one inside
            continue
        yield PiiMatch(rule.kind, *span)
        pos = max(span[1], m.start() + 1)


def _regex_matches(text: str) -> list[PiiMatch]:
    digit = _DIGIT.search(text) is not None
    lower = text.lower()
    found: list[PiiMatch] = []
    for rule in _RULES:
        if rule.digit and not digit:
            continue
        if rule.words and not any(w in lower for w in rule.words):
            continue
        found.extend(_rule_matches(rule, text))
    return found


def _resolve(candidates: Sequence[PiiMatch]) -> list[PiiMatch]:
    """Keep non-overlapping matches, most specific kind first, then longest first."""
    ranked = sorted(
        candidates, key=lambda m: (_RANK.get(m.kind, len(_RANK)), m.start - m.end)
    )
    chosen: list[PiiMatch] = []
    starts: list[int] = []
    for m in ranked:
        i = bisect_right(starts, m.start)
        if (i and chosen[i - 1].end > m.start) or (
            i < len(chosen) and chosen[i].start < m.end
        ):
            continue
        starts.insert(i, m.start)
        chosen.insert(i, m)
    return chosen


class Analyzer(Protocol):
    """What the Scrubber needs from a Presidio `AnalyzerEngine`."""

    def analyze(
        self, text: str, language: str, entities: list[str] | None = None
    ) -> list[Any]: ...


class Scrubber:
    """Find and replace PII with regexes, plus Presidio where it is available."""

    def __init__(
        self,
        backend: Backend = "auto",
        *,
        analyzer: Analyzer | None = None,
        language: str = "en",
        min_score: float = 0.5,
    ) -> None:
        if backend not in {"auto", "regex", "presidio"}:
            raise ConfigError(
                f"unknown PII backend {backend!r}; use 'auto' (Presidio when "
                "importable), 'regex' or 'presidio'"
            )
        if not 0.0 <= min_score <= 1.0:
            raise ConfigError(
                f"min_score must be within [0, 1], got {min_score}; Presidio scores "
                "are confidences, 0.5 is a common cut"
            )
        self.language = language
        self.min_score = min_score
        self.analyzer_failures = 0
        self._analyzer = None if backend == "regex" else analyzer
        if self._analyzer is None and backend != "regex":
            self._analyzer = _presidio_engine(required=backend == "presidio")

    @property
    def backend(self) -> str:
        """Say which detectors run: 'regex' or 'regex+presidio'."""
        return "regex" if self._analyzer is None else "regex+presidio"

    def find(self, text: str) -> list[PiiMatch]:
        """Return the non-overlapping PII spans in text, in order."""
        return _resolve(_regex_matches(text) + self._presidio_matches(text))

    def scrub_with_counts(self, text: str) -> tuple[str, dict[str, int]]:
        """Replace every span with its placeholder until none is left; count them."""
        counts = dict.fromkeys(KINDS, 0)
        for _ in range(_MAX_ROUNDS):
            matches = self.find(text)
            if not matches:
                break
            pieces, last = [], 0
            for m in matches:
                pieces += [text[last : m.start], PLACEHOLDERS[m.kind]]
                counts[m.kind] = counts.get(m.kind, 0) + 1
                last = m.end
            text = "".join([*pieces, text[last:]])
        return text, counts

    def scrub(self, text: str) -> str:
        """Replace every PII span with its placeholder."""
        return self.scrub_with_counts(text)[0]

    def residual(self, text: str) -> list[PiiMatch]:
        """Re-check scrubbed text; anything found means the example must be dropped."""
        return self.find(text)

    def _presidio_matches(self, text: str) -> list[PiiMatch]:
        if self._analyzer is None:
            return []
        try:
            results = self._analyzer.analyze(
                text=text, language=self.language, entities=list(PRESIDIO_KINDS)
            )
            return [
                PiiMatch(PRESIDIO_KINDS[r.entity_type], r.start, r.end)
                for r in results
                if r.entity_type in PRESIDIO_KINDS
                and r.score >= self.min_score
                and 0 <= r.start < r.end <= len(text)
                and text[r.start : r.end] not in _PLACEHOLDER_TEXTS
            ]
        except Exception as exc:
            # The regexes still ran; losing names beats losing the whole batch.
            self.analyzer_failures += 1
            logger.warning(
                "pii analyzer=presidio failed error=%s; regexes only for this text",
                type(exc).__name__,
            )
            return []


def _presidio_engine(required: bool) -> Analyzer | None:
    if find_spec("presidio_analyzer") is None:
        if required:
            raise ConfigError(
                "backend='presidio' needs presidio_analyzer, which is not importable; "
                "install presidio-analyzer and a spaCy English model, or use "
                "backend='regex' or 'auto'"
            )
        return None
    from presidio_analyzer import AnalyzerEngine

    try:
        return AnalyzerEngine()
    except Exception as exc:
        if required:
            raise ConfigError(
                f"presidio_analyzer is installed but its engine failed to start "
                f"({exc}); install a spaCy model (python -m spacy download "
                "en_core_web_lg) or use backend='regex'"
            ) from exc
        logger.warning("pii analyzer=presidio unavailable error=%s; regexes only", exc)
        return None


_REGEX = Scrubber("regex")


def find_pii(text: str) -> list[PiiMatch]:
    """Return the non-overlapping regex PII spans in text, in order."""
    return _REGEX.find(text)


def scrub(text: str) -> str:
    """Replace every regex-detected PII span with its placeholder."""
    return _REGEX.scrub(text)


def scrub_with_counts(text: str) -> tuple[str, dict[str, int]]:
    """Scrub text and count the replacements per kind."""
    return _REGEX.scrub_with_counts(text)


def residual_pii(text: str) -> list[PiiMatch]:
    """Re-check scrubbed text; a non-empty answer means drop the example."""
    return _REGEX.residual(text)
