"""The LLM judge grades through a real OpenAI-compatible endpoint on 127.0.0.1."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from driftloop.errors import ConfigError, DriftloopError
from evals.judge import (
    PROMPT_VERSION,
    PROMPTS_DIR,
    Judge,
    JudgePrompt,
    JudgeSettings,
    load_prompt,
    summarise,
)

KEY_ENV = "DRIFTLOOP_TEST_JUDGE_KEY"
SECRET = "sk-test-0123456789abcdef0123456789abcdef"
SAME = {"verdict": "same", "score": 0.8, "reason": "Matches the reference."}
CASE = (
    "How do I reset my password?",
    "Open Settings, choose Security, then Reset password.",
    "Go to Settings > Security and click Reset password.",
)


def completion(content: str) -> str:
    """Return a chat-completions body whose one message is `content`."""
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
        }
    )


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: str


@dataclass
class FakeEndpoint:
    """Replies from `script` in order, then with `default`; records every request."""

    url: str = ""
    script: list[tuple[int, str]] = field(default_factory=list)
    default: tuple[int, str] = (200, completion(json.dumps(SAME)))
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self, request: Request) -> tuple[int, str]:
        with self.lock:
            self.requests.append(request)
            return self.script.pop(0) if self.script else self.default


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        request = Request(self.path, dict(self.headers.items()), json.loads(raw), raw)
        status, body = self.server.fake.next_reply(request)  # type: ignore[attr-defined]
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_fake() -> Iterator[FakeEndpoint]:
    """Run a real HTTP server speaking the chat-completions API, on a free port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    fake = FakeEndpoint(url=f"http://127.0.0.1:{server.server_port}/v1")
    server.fake = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    with serve_fake() as fake:
        yield fake


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def make_judge(
    endpoint: FakeEndpoint, tmp_path: Path, prompt: JudgePrompt | None = None, **kw: Any
) -> Judge:
    settings = {"url": endpoint.url, "model": "judge-small", "api_key_env": KEY_ENV}
    return Judge(JudgeSettings(**settings | kw), tmp_path / "judge", prompt)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TestSettings:
    def test_the_judge_is_off_when_no_url_is_set(self, monkeypatch, tmp_path):
        monkeypatch.delenv("DRIFTLOOP_JUDGE_URL", raising=False)
        assert not JudgeSettings().enabled
        with pytest.raises(ConfigError, match="DRIFTLOOP_JUDGE_URL is empty"):
            Judge(JudgeSettings(), tmp_path)

    def test_the_judge_is_on_when_its_url_is_set_in_the_environment(self, monkeypatch):
        monkeypatch.setenv("DRIFTLOOP_JUDGE_URL", "http://localhost:8000/v1")
        assert JudgeSettings().enabled

    def test_a_judge_without_a_model_is_refused_naming_the_model_setting(
        self, endpoint, tmp_path
    ):
        with pytest.raises(ConfigError, match="DRIFTLOOP_JUDGE_MODEL is empty"):
            make_judge(endpoint, tmp_path, model="")

    def test_a_url_that_is_not_http_is_refused(self, tmp_path):
        settings = JudgeSettings(url="localhost:8000/v1", model="m")
        with pytest.raises(ConfigError, match="expected an http:// or https://"):
            Judge(settings, tmp_path)

    def test_a_key_pasted_as_the_variable_name_is_refused_without_echoing_it(
        self, endpoint, tmp_path
    ):
        with pytest.raises(ConfigError, match="NAME of an environment") as caught:
            make_judge(endpoint, tmp_path, api_key_env=SECRET)
        assert SECRET not in str(caught.value)


class TestPrompt:
    def test_the_prompt_is_read_from_its_versioned_file(self):
        prompt = load_prompt()
        text = (PROMPTS_DIR / f"{PROMPT_VERSION}.md").read_text(encoding="utf-8")
        assert prompt.version == PROMPT_VERSION == "judge-v1"
        assert prompt.sha256 == hashlib.sha256(text.encode()).hexdigest()
        for verdict in ("better", "same", "worse", "wrong"):
            assert f'"{verdict}"' in prompt.text

    def test_an_unknown_prompt_version_is_refused_naming_the_versions_filed(self):
        with pytest.raises(ConfigError, match=r"'judge-v0'.*\['judge-v1'"):
            load_prompt("judge-v0")


class TestVerdict:
    def test_a_verdict_is_parsed_and_returned_with_the_prompt_version(
        self, endpoint, tmp_path, no_key
    ):
        result = make_judge(endpoint, tmp_path).score(*CASE)
        assert result == SAME | {
            "prompt_version": "judge-v1",
            "prompt_sha256": load_prompt().sha256,
            "cached": False,
        }

    def test_the_request_follows_the_chat_completions_api(
        self, endpoint, tmp_path, no_key
    ):
        make_judge(endpoint, tmp_path).score(*CASE)
        [request] = endpoint.requests
        assert request.path == "/v1/chat/completions"
        assert request.body["model"] == "judge-small"
        assert request.body["temperature"] == 0
        assert request.body["response_format"] == {"type": "json_object"}
        system, user = request.body["messages"]
        assert system == {"role": "system", "content": load_prompt().text}
        assert user["role"] == "user"
        for tag, text in zip(("question", "reference", "candidate"), CASE, strict=True):
            assert f"<{tag}>\n{text}\n</{tag}>" in user["content"]

    def test_a_json_reply_in_a_markdown_fence_is_accepted(
        self, endpoint, tmp_path, no_key
    ):
        endpoint.default = (200, completion(f"```json\n{json.dumps(SAME)}\n```"))
        assert make_judge(endpoint, tmp_path).score(*CASE)["verdict"] == "same"

    def test_many_cases_are_graded_in_order_and_a_repeated_case_is_asked_once(
        self, endpoint, tmp_path, no_key
    ):
        better = {"verdict": "better", "score": 0.9, "reason": "More complete."}
        endpoint.script = [(200, completion(json.dumps(better)))]
        other = (CASE[0], CASE[1], "Email us and we will reset it for you.")
        results = make_judge(endpoint, tmp_path).score_many([CASE, other, CASE])
        assert [r["verdict"] for r in results] == ["better", "same", "better"]
        assert [r["cached"] for r in results] == [False, False, True]
        assert len(endpoint.requests) == 2

    def test_a_case_with_a_missing_text_is_refused_naming_its_index(
        self, endpoint, tmp_path
    ):
        with pytest.raises(DriftloopError, match=r"items\[1\] is not a"):
            make_judge(endpoint, tmp_path).score_many([CASE, (CASE[0], None, "a")])
        assert endpoint.requests == []


class TestCache:
    def test_a_second_identical_call_is_served_from_the_cache(
        self, endpoint, tmp_path, no_key
    ):
        judge = make_judge(endpoint, tmp_path)
        first, second = judge.score(*CASE), judge.score(*CASE)
        assert (first["cached"], second["cached"]) == (False, True)
        assert {**first, "cached": True} == second
        assert len(endpoint.requests) == 1
        assert judge.hits == 1

    def test_the_cache_outlives_the_judge_that_filled_it(
        self, endpoint, tmp_path, no_key
    ):
        make_judge(endpoint, tmp_path).score(*CASE)
        assert make_judge(endpoint, tmp_path).score(*CASE)["cached"]
        assert len(endpoint.requests) == 1

    def test_a_changed_prompt_version_misses_the_cache(
        self, endpoint, tmp_path, no_key
    ):
        make_judge(endpoint, tmp_path).score(*CASE)
        v2 = JudgePrompt("judge-v2", load_prompt().text)
        result = make_judge(endpoint, tmp_path, prompt=v2).score(*CASE)
        assert not result["cached"]
        assert result["prompt_version"] == "judge-v2"
        assert len(endpoint.requests) == 2

    def test_an_edited_prompt_under_the_same_version_misses_the_cache(
        self, endpoint, tmp_path, no_key
    ):
        make_judge(endpoint, tmp_path).score(*CASE)
        edited = JudgePrompt(PROMPT_VERSION, load_prompt().text + "\nBe strict.\n")
        result = make_judge(endpoint, tmp_path, prompt=edited).score(*CASE)
        assert not result["cached"]
        assert result["prompt_sha256"] == edited.sha256 != load_prompt().sha256
        assert len(endpoint.requests) == 2

    def test_a_changed_model_misses_the_cache(self, endpoint, tmp_path, no_key):
        make_judge(endpoint, tmp_path).score(*CASE)
        assert not make_judge(endpoint, tmp_path, model="judge-large").score(*CASE)[
            "cached"
        ]
        assert [r.body["model"] for r in endpoint.requests] == [
            "judge-small",
            "judge-large",
        ]

    def test_a_changed_answer_misses_the_cache(self, endpoint, tmp_path, no_key):
        judge = make_judge(endpoint, tmp_path)
        judge.score(*CASE)
        assert not judge.score(CASE[0], CASE[1], CASE[2] + " Done.")["cached"]
        assert len(endpoint.requests) == 2

    def test_with_the_cache_off_every_call_asks_the_judge(
        self, endpoint, tmp_path, no_key
    ):
        judge = make_judge(endpoint, tmp_path, cache=False)
        assert not judge.score(*CASE)["cached"] and not judge.score(*CASE)["cached"]
        assert len(endpoint.requests) == 2
        assert not (tmp_path / "judge").exists()


class TestInvalidReply:
    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (completion("The answer looks fine."), "the judge's message is not JSON"),
            (completion('{"score": 0.5}'), "verdict is None, expected one of better"),
            (completion('{"verdict": "great", "score": 0.5}'), "verdict is 'great'"),
            (completion('{"verdict": "same", "score": 1.5}'), "score is 1.5, expected"),
            (completion('{"verdict": "same", "score": true}'), "score is True"),
            (completion('["same", 0.8]'), "JSON but not an object"),
            ("<html>Bad gateway</html>", "not a chat completion"),
        ],
    )
    def test_a_reply_without_a_valid_verdict_gives_verdict_invalid(
        self, endpoint, tmp_path, no_key, body, reason
    ):
        endpoint.default = (200, body)
        judge = make_judge(endpoint, tmp_path)
        result = judge.score(*CASE)
        assert result["verdict"] == "invalid"
        assert math.isnan(result["score"])
        assert reason in result["reason"]
        assert result["prompt_version"] == PROMPT_VERSION
        assert judge.invalid == 1

    def test_an_invalid_verdict_is_not_cached_so_a_rerun_asks_again(
        self, endpoint, tmp_path, no_key
    ):
        endpoint.script = [(200, completion("not json"))] * 2
        judge = make_judge(endpoint, tmp_path)
        verdicts = [judge.score(*CASE) for _ in range(4)]
        assert [v["verdict"] for v in verdicts] == [
            "invalid",
            "invalid",
            "same",
            "same",
        ]
        assert [v["cached"] for v in verdicts] == [False, False, False, True]
        assert len(endpoint.requests) == 3
        assert judge.invalid == 2


class TestHttpFailures:
    @pytest.mark.parametrize("status", [429, 500, 503])
    def test_a_transient_failure_is_retried_and_succeeds(
        self, endpoint, tmp_path, no_key, status
    ):
        endpoint.script = [(status, '{"error": "busy"}')]
        result = make_judge(endpoint, tmp_path).score(*CASE)
        assert result["verdict"] == "same"
        assert len(endpoint.requests) == 2

    def test_a_server_that_keeps_failing_is_refused_after_max_attempts(
        self, endpoint, tmp_path, no_key
    ):
        endpoint.default = (500, '{"error": "model crashed"}')
        judge = make_judge(endpoint, tmp_path, max_attempts=2)
        with pytest.raises(DriftloopError, match="failed 2 attempt") as caught:
            judge.score(*CASE)
        assert endpoint.url in str(caught.value)
        assert "HTTP 500" in str(caught.value)
        assert "DRIFTLOOP_JUDGE_MAX_ATTEMPTS" in str(caught.value)
        assert len(endpoint.requests) == 2

    def test_an_unreachable_endpoint_is_retried_then_refused(self, tmp_path, no_key):
        url = f"http://127.0.0.1:{free_port()}/v1"
        judge = Judge(JudgeSettings(url=url, model="m", max_attempts=2), tmp_path)
        with pytest.raises(DriftloopError, match="ConnectError"):
            judge.score(*CASE)
        assert judge.requests == 2

    @pytest.mark.parametrize("status", [401, 403])
    def test_a_refused_key_raises_config_error_naming_the_variable_after_one_request(
        self, endpoint, tmp_path, no_key, status
    ):
        endpoint.default = (status, '{"error": "invalid api key"}')
        with pytest.raises(ConfigError, match=f"HTTP {status}") as caught:
            make_judge(endpoint, tmp_path).score(*CASE)
        assert f"environment variable {KEY_ENV} is unset" in str(caught.value)
        assert len(endpoint.requests) == 1

    def test_another_client_error_raises_config_error_with_status_and_body(
        self, endpoint, tmp_path, no_key
    ):
        endpoint.default = (404, '{"error": "model judge-small does not exist"}')
        with pytest.raises(ConfigError, match="HTTP 404, expected 200") as caught:
            make_judge(endpoint, tmp_path).score(*CASE)
        assert "model judge-small does not exist" in str(caught.value)
        assert len(endpoint.requests) == 1


class TestPrivacy:
    def test_an_email_in_the_answer_never_reaches_the_server(
        self, endpoint, tmp_path, no_key
    ):
        answer = "Write to jane.doe@example.com or call +1 415 555 0132."
        make_judge(endpoint, tmp_path).score(CASE[0], CASE[1], answer)
        [request] = endpoint.requests
        assert "jane.doe@example.com" not in request.raw
        assert "<EMAIL>" in request.body["messages"][1]["content"]

    def test_the_key_is_sent_as_a_bearer_token_only_when_its_variable_is_set(
        self, endpoint, tmp_path, monkeypatch
    ):
        monkeypatch.delenv(KEY_ENV, raising=False)
        make_judge(endpoint, tmp_path, cache=False).score(*CASE)
        monkeypatch.setenv(KEY_ENV, SECRET)
        make_judge(endpoint, tmp_path, cache=False).score(*CASE)
        without, with_key = (
            {k.lower(): v for k, v in r.headers.items()} for r in endpoint.requests
        )
        assert "authorization" not in without
        assert with_key["authorization"] == f"Bearer {SECRET}"

    @pytest.mark.parametrize(
        ("status", "error"),
        [(401, ConfigError), (400, ConfigError), (502, DriftloopError)],
    )
    def test_the_key_never_appears_in_a_raised_error(
        self, endpoint, tmp_path, monkeypatch, status, error
    ):
        monkeypatch.setenv(KEY_ENV, SECRET)
        # A careless server echoes the Authorization header in its error page.
        endpoint.default = (status, json.dumps({"error": f"bad key Bearer {SECRET}"}))
        with pytest.raises(error) as caught:
            make_judge(endpoint, tmp_path, max_attempts=2).score(*CASE)
        assert SECRET not in str(caught.value)
        assert SECRET not in repr(caught.value)
        if status == 401:
            assert f"{KEY_ENV} holds a key it refused" in str(caught.value)


class TestSummary:
    def test_the_summary_averages_valid_verdicts_and_counts_invalid_apart(
        self, endpoint, tmp_path, no_key
    ):
        wrong = {"verdict": "wrong", "score": 0.1, "reason": "Invents a fee."}
        endpoint.script = [
            (200, completion(json.dumps(wrong))),
            (200, completion("not json")),
        ]
        cases = [(CASE[0], CASE[1], f"answer {i}") for i in range(4)]
        summary = summarise(make_judge(endpoint, tmp_path).score_many(cases))
        # wrong 0.1, invalid, then same 0.8 twice: the invalid one is left out.
        assert summary["judge_score"] == pytest.approx((0.1 + 0.8 + 0.8) / 3)
        assert summary["judge_invalid"] == pytest.approx(0.25)
        assert summary["judge_wrong"] == pytest.approx(1 / 3)
        assert summary["judge_same"] == pytest.approx(2 / 3)
        assert summary["judge_better"] == 0

    def test_a_summary_of_nothing_valid_is_nan_not_zero(self):
        summary = summarise([{"verdict": "invalid", "score": math.nan}])
        assert math.isnan(summary["judge_score"])
        assert summary["judge_invalid"] == 1
