"""Grade a candidate answer against the reference with an LLM judge, when one is set.

The judge is off unless DRIFTLOOP_JUDGE_URL names an OpenAI-compatible endpoint. Its
instructions are a versioned file in `evals/prompts/`; every verdict carries that
version and the SHA-256 of the prompt text, and the verdict cache is keyed by both and
by the model, so an edited prompt or another model asks the judge again. Texts are
scrubbed of PII before they are hashed or sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from driftloop.errors import ConfigError, DriftloopError
from driftloop.settings import HomeSettings
from tasks.pii import scrub

log = logging.getLogger(__name__)

PROMPT_VERSION = "judge-v1"
PROMPTS_DIR = Path(__file__).parent / "prompts"
VERDICTS = ("better", "same", "worse", "wrong")
INVALID = "invalid"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXCERPT_CHARS = 200
# Backoff in seconds: the first wait, the longest, and up to this much random extra
# so parallel runs do not retry in step.
_BACKOFF = {"multiplier": 0.5, "max": 8.0, "jitter": 0.5}
# Failures worth another attempt: the server may come back, the request was fine.
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# Writers queue behind each other for this long before SQLite gives up.
_BUSY_TIMEOUT_S = 120.0

Graded = tuple[str, float, str]


class JudgeSettings(BaseSettings):
    """Where the LLM judge is served, which model judges, and how patiently to ask."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_JUDGE_", extra="ignore")

    url: str = Field(
        "",
        description=(
            "Base URL of an OpenAI-compatible API, such as http://localhost:8000/v1; "
            "empty turns the judge off."
        ),
    )
    model: str = Field(
        "", description="Model name sent with every request; needed when url is set."
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description=(
            "Name of the environment variable that holds the API key (never the key "
            "itself); when it is unset, requests carry no Authorization header."
        ),
    )
    timeout_s: float = Field(
        30, gt=0, le=600, description="Seconds to wait for one reply."
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="Attempts per request, with backoff, on 429, 5xx and lost links.",
    )
    cache: bool = Field(
        True, description="Keep verdicts in <home>/cache/judge: grade no case twice."
    )

    @property
    def enabled(self) -> bool:
        """Tell whether a judge endpoint is set."""
        return bool(self.url)


@dataclass(frozen=True)
class JudgePrompt:
    """The judge's instructions and the version they are filed under."""

    version: str
    text: str

    @property
    def sha256(self) -> str:
        """Return the SHA-256 of the prompt text, so an unversioned edit shows."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def load_prompt(version: str = PROMPT_VERSION) -> JudgePrompt:
    """Read the judge prompt of `version` from `evals/prompts/<version>.md`."""
    path = PROMPTS_DIR / f"{version}.md"
    if not path.is_file():
        known = sorted(p.stem for p in PROMPTS_DIR.glob("*.md"))
        raise ConfigError(
            f"Judge prompt version {version!r} has no file {path}; the versions "
            f"filed are {known}. Pick one of them or add the file."
        )
    return JudgePrompt(version, path.read_text(encoding="utf-8"))


def format_case(question: str, reference: str, answer: str) -> str:
    """Lay out one case in the tags the prompt refers to."""
    return (
        f"<question>\n{question}\n</question>\n\n"
        f"<reference>\n{reference}\n</reference>\n\n"
        f"<candidate>\n{answer}\n</candidate>"
    )


def cache_key(
    prompt: JudgePrompt, model: str, question: str, reference: str, answer: str
) -> str:
    """Hash everything that decides a verdict; the texts must be scrubbed already."""
    # A JSON list keeps the fields apart: no text can pass for a neighbouring field.
    fields = [prompt.version, prompt.sha256, model, question, reference, answer]
    return hashlib.sha256(json.dumps(fields).encode("utf-8")).hexdigest()


def parse_reply(body: str) -> Graded:
    """Read (verdict, score, reason) from a chat completion; a fault gives 'invalid'."""
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return _invalid(
            "the reply is not a chat completion with choices[0].message.content: "
            + _excerpt(body)
        )
    if not isinstance(content, str):
        return _invalid(f"the message content is {type(content).__name__}, not text")
    try:
        data = json.loads(_unfence(content))
    except ValueError:
        return _invalid("the judge's message is not JSON: " + _excerpt(content))
    if not isinstance(data, dict):
        return _invalid("the judge's message is JSON but not an object")

    verdict = data.get("verdict")
    if isinstance(verdict, str):
        verdict = verdict.strip().lower()
    if verdict not in VERDICTS:
        return _invalid(
            f"verdict is {verdict!r}, expected one of {', '.join(VERDICTS)}"
        )
    score = data.get("score")
    number = isinstance(score, int | float) and not isinstance(score, bool)
    if not number or not 0 <= score <= 1:
        return _invalid(f"score is {score!r}, expected a number from 0 to 1")
    reason = data.get("reason", "")
    return verdict, float(score), reason if isinstance(reason, str) else str(reason)


def _invalid(reason: str) -> Graded:
    return INVALID, math.nan, reason


def _unfence(content: str) -> str:
    # Some models wrap JSON in a markdown fence even when asked for a bare object.
    text = content.strip()
    if text.startswith("```") and text.endswith("```"):
        text = text[3:-3].strip()
        text = text.removeprefix("json").strip()
    return text


def _redact(text: str, secret: str) -> str:
    # A server may echo request headers in an error page; the key stays out of errors.
    return text.replace(secret, "<redacted>") if secret else text


def _excerpt(text: str, secret: str = "") -> str:
    flat = " ".join(_redact(text, secret).split())
    cut = flat[:_EXCERPT_CHARS]
    return repr(cut + "…" if len(flat) > _EXCERPT_CHARS else cut)


class VerdictCache:
    """Valid verdicts on disk, keyed by the hash of everything that decides them.

    SQLite in WAL mode, like the embedding cache: two evaluations may grade at once,
    readers run beside one writer and writers queue on a lock. Keep <home> on a local
    disk.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / "verdicts.sqlite"

    def get(self, key: str) -> Graded | None:
        """Return the verdict stored under `key`, or None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT verdict, score, reason FROM verdicts WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else (row[0], float(row[1]), row[2])

    def put(self, key: str, graded: Graded) -> None:
        """Store a verdict under `key`; one already there is kept."""
        with self._connect() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO verdicts VALUES (?, ?, ?, ?)", (key, *graded)
            )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short-lived connection per call: safe across threads and forks.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, "
                "verdict TEXT NOT NULL, score REAL NOT NULL, reason TEXT NOT NULL) "
                "WITHOUT ROWID"
            )
            yield conn
        finally:
            conn.close()


class _Retryable(Exception):
    """A reply the server may not give next time: 429 or 5xx."""

    def __init__(self, status: int, excerpt: str) -> None:
        super().__init__(f"HTTP {status}: {excerpt}")
        self.status = status


class Judge:
    """Ask an OpenAI-compatible model to grade answers; keep its valid verdicts."""

    def __init__(
        self,
        settings: JudgeSettings | None = None,
        cache_dir: Path | None = None,
        prompt: JudgePrompt | None = None,
    ) -> None:
        self.settings = settings or JudgeSettings()
        _check_settings(self.settings)
        self.prompt = prompt or load_prompt()
        self.endpoint = self.settings.url.rstrip("/") + "/chat/completions"
        folder = cache_dir or HomeSettings().home / "cache" / "judge"
        self.cache = VerdictCache(folder) if self.settings.cache else None
        # Counts over this instance's life: requests sent (retries included), cases
        # served from the cache, and replies that held no usable verdict.
        self.requests = 0
        self.hits = 0
        self.invalid = 0

    def score(self, question: str, reference: str, answer: str) -> dict[str, Any]:
        """Grade one answer against the reference for `question`."""
        return self.score_many([(question, reference, answer)])[0]

    def score_many(self, items: Sequence[tuple[str, str, str]]) -> list[dict[str, Any]]:
        """Grade (question, reference, answer) cases, one verdict each, in order."""
        _check_items(items)
        key = os.environ.get(self.settings.api_key_env, "").strip()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        before = (self.requests, self.hits, self.invalid)

        with httpx.Client(timeout=self.settings.timeout_s, headers=headers) as client:
            results = [self._score_one(client, key, *item) for item in items]

        requests, hits, invalid = (
            now - then
            for now, then in zip(
                (self.requests, self.hits, self.invalid), before, strict=True
            )
        )
        log.info(
            "judge model=%s prompt=%s cases=%d cached=%d requests=%d invalid=%d",
            self.settings.model,
            self.prompt.version,
            len(items),
            hits,
            requests,
            invalid,
        )
        return results

    def _score_one(
        self, client: httpx.Client, key: str, question: str, reference: str, answer: str
    ) -> dict[str, Any]:
        texts = (scrub(question), scrub(reference), scrub(answer))
        digest = cache_key(self.prompt, self.settings.model, *texts)
        if self.cache is not None and (hit := self.cache.get(digest)) is not None:
            self.hits += 1
            return self._result(hit, cached=True)

        graded = parse_reply(self._ask(client, key, texts))
        if graded[0] == INVALID:
            # Not cached: a rerun asks again rather than keep a broken reply.
            self.invalid += 1
            log.warning(
                "judge model=%s invalid reply: %s", self.settings.model, graded[2]
            )
        elif self.cache is not None:
            self.cache.put(digest, graded)
        return self._result(graded, cached=False)

    def _ask(self, client: httpx.Client, key: str, texts: tuple[str, str, str]) -> str:
        body = {
            "model": self.settings.model,
            "messages": [
                {"role": "system", "content": self.prompt.text},
                {"role": "user", "content": format_case(*texts)},
            ],
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }
        attempts = self.settings.max_attempts
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(**_BACKOFF),
            retry=retry_if_exception_type((_Retryable, *_TRANSIENT)),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(self._post, client, key, body)
        except (_Retryable, *_TRANSIENT) as exc:
            raise DriftloopError(
                f"Judge endpoint {self.endpoint} failed {attempts} attempt(s); the "
                f"last gave {type(exc).__name__}: {_redact(str(exc), key)}. Check the "
                "server is up and serving DRIFTLOOP_JUDGE_MODEL "
                f"{self.settings.model!r}, or raise DRIFTLOOP_JUDGE_MAX_ATTEMPTS or "
                "DRIFTLOOP_JUDGE_TIMEOUT_S."
            ) from None

    def _post(self, client: httpx.Client, key: str, body: dict[str, Any]) -> str:
        self.requests += 1
        response = client.post(self.endpoint, json=body)
        status = response.status_code
        if status < 300:
            return response.text
        excerpt = _excerpt(response.text, key)
        if status in (401, 403):
            env = self.settings.api_key_env
            state = "holds a key it refused" if key else "is unset or empty"
            raise ConfigError(
                f"Judge endpoint {self.endpoint} answered HTTP {status} (not allowed): "
                f"the environment variable {env} {state}. Set {env} to a key this "
                "endpoint accepts, or set DRIFTLOOP_JUDGE_API_KEY_ENV to the name of "
                "the variable that holds one."
            )
        if status == 429 or status >= 500:
            raise _Retryable(status, excerpt)
        raise ConfigError(
            f"Judge endpoint {self.endpoint} answered HTTP {status}, expected 200: "
            f"{excerpt}. Check DRIFTLOOP_JUDGE_URL is the API's base URL (most end in "
            f"/v1) and DRIFTLOOP_JUDGE_MODEL {self.settings.model!r} is a model it "
            "serves."
        )

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "judge endpoint=%s attempt=%d failed error=%s; retrying",
            self.endpoint,
            state.attempt_number,
            type(error).__name__ if error else "unknown",
        )

    def _result(self, graded: Graded, cached: bool) -> dict[str, Any]:
        verdict, score, reason = graded
        return {
            "verdict": verdict,
            "score": score,
            "reason": reason,
            "prompt_version": self.prompt.version,
            "prompt_sha256": self.prompt.sha256,
            "cached": cached,
        }


def summarise(verdicts: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean score of the valid verdicts and the share of each verdict, for a table.

    Invalid replies count in `judge_invalid` only, so a flaky judge cannot drag the
    mean down as if the answers were bad.
    """
    valid = [v for v in verdicts if v["verdict"] != INVALID]
    total = len(verdicts)
    out = {
        "judge_score": (
            float(sum(v["score"] for v in valid) / len(valid)) if valid else math.nan
        ),
        "judge_invalid": (total - len(valid)) / total if total else math.nan,
    }
    for name in VERDICTS:
        count = sum(v["verdict"] == name for v in valid)
        out[f"judge_{name}"] = count / len(valid) if valid else math.nan
    return out


def _check_settings(settings: JudgeSettings) -> None:
    if not settings.enabled:
        raise ConfigError(
            "The LLM judge is off: DRIFTLOOP_JUDGE_URL is empty. Set it to an "
            "OpenAI-compatible base URL such as http://localhost:8000/v1, or check "
            "JudgeSettings().enabled before building a Judge."
        )
    if not settings.url.startswith(("http://", "https://")):
        raise ConfigError(
            f"DRIFTLOOP_JUDGE_URL is {settings.url!r}, expected an http:// or https:// "
            "base URL such as http://localhost:8000/v1."
        )
    if not settings.model.strip():
        raise ConfigError(
            "DRIFTLOOP_JUDGE_MODEL is empty, but the judge is on (DRIFTLOOP_JUDGE_URL "
            "is set): set it to the name of a model the endpoint serves."
        )
    if not _ENV_NAME.fullmatch(settings.api_key_env):
        # Never echo the value: a key pasted here by mistake must not reach a log.
        raise ConfigError(
            "DRIFTLOOP_JUDGE_API_KEY_ENV must be the NAME of an environment variable "
            f"(letters, digits, underscores), not a key; it holds "
            f"{len(settings.api_key_env)} characters that are not such a name. Put "
            "the key in a variable such as OPENAI_API_KEY and name that variable."
        )


def _check_items(items: Sequence[tuple[str, str, str]]) -> None:
    for index, item in enumerate(items):
        ok = isinstance(item, tuple | list) and len(item) == 3
        if not ok or not all(isinstance(text, str) for text in item):
            raise DriftloopError(
                f"items[{index}] is not a (question, reference, answer) triple of "
                "texts: drop or fill cases with a missing text before judging."
            )
