"""Each accepted input shape normalises; each invalid record is refused with its reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
import pytest

from driftloop.errors import ConfigError, InvalidRecord
from tasks.records import load_mapping, normalize, parse_line


def flat(**overrides):
    record = {
        "request_id": "r1",
        "timestamp": "2026-11-02T10:00:00Z",
        "prompt": "Where is my order?",
        "response": "It ships tomorrow.",
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not ...}


def micros(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1_000_000)


class TestFlatRecords:
    def test_a_minimal_flat_record_gets_a_messages_list_from_its_prompt(self):
        row = normalize(flat())
        assert row["messages"] == [{"role": "user", "content": "Where is my order?"}]
        assert row["prompt"] == "Where is my order?"
        assert row["timestamp"] == micros("2026-11-02T10:00:00+00:00")

    def test_the_prompt_is_the_last_user_turn_of_the_messages(self):
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "refund please"},
        ]
        row = normalize(flat(prompt=..., messages=messages))
        assert row["prompt"] == "refund please"
        assert row["messages"] == messages

    def test_fields_the_schema_lacks_are_kept_in_metadata(self):
        row = normalize(flat(channel="web", locale="de-DE", metadata={"ab": "b"}))
        assert json.loads(row["metadata"]) == {
            "ab": "b",
            "channel": "web",
            "locale": "de-DE",
        }

    def test_a_timestamp_with_an_offset_is_converted_to_utc(self):
        row = normalize(flat(timestamp="2026-11-02T12:00:00+02:00"))
        assert row["timestamp"] == micros("2026-11-02T10:00:00+00:00")

    def test_a_naive_timestamp_is_taken_as_utc(self):
        row = normalize(flat(timestamp="2026-11-02T10:00:00"))
        assert row["timestamp"] == micros("2026-11-02T10:00:00+00:00")

    def test_epoch_seconds_and_milliseconds_mean_the_same_instant(self):
        seconds = normalize(flat(timestamp=1_793_354_400))["timestamp"]
        millis = normalize(flat(timestamp=1_793_354_400_000))["timestamp"]
        assert seconds == millis == 1_793_354_400_000_000

    def test_numeric_ids_become_strings(self):
        row = normalize(flat(request_id=42, session_id=7, user_id=9))
        assert (row["request_id"], row["session_id"], row["user_id"]) == (
            "42",
            "7",
            "9",
        )

    def test_openai_content_parts_are_joined_into_text(self):
        parts = [
            {"type": "text", "text": "part one, "},
            {"type": "text", "text": "two"},
        ]
        row = normalize(flat(prompt=..., messages=[{"role": "user", "content": parts}]))
        assert row["prompt"] == "part one, two"

    def test_a_datetime_in_metadata_is_stored_as_iso_text(self):
        row = normalize(flat(metadata={"when": datetime(2026, 1, 1, tzinfo=UTC)}))
        assert orjson.loads(row["metadata"]) == {"when": "2026-01-01T00:00:00+00:00"}

    def test_an_empty_response_is_kept_since_it_is_a_quality_signal(self):
        assert normalize(flat(response=""))["response"] == ""


class TestOpenAIRecords:
    def record(self):
        return {
            "id": "chatcmpl-1",
            "created_at": "2026-11-02T10:00:00-05:00",
            "request": {
                "model": "sales-assistant",
                "messages": [{"role": "user", "content": "price of the pro plan?"}],
                "temperature": 0.2,
            },
            "response": {
                "id": "chatcmpl-1",
                "choices": [
                    {
                        "message": {"role": "assistant", "content": "$49"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": 3,
                    "total_tokens": 15,
                },
            },
            "metadata": {"session_id": "s1", "latency_ms": 812, "campaign": "q4"},
        }

    def test_an_openai_record_maps_to_the_schema(self):
        row = normalize(self.record())
        assert row["request_id"] == "chatcmpl-1"
        assert row["model"] == "sales-assistant"
        assert row["prompt"] == "price of the pro plan?"
        assert row["response"] == "$49"
        assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 3)
        assert (row["session_id"], row["latency_ms"]) == ("s1", 812.0)
        assert row["timestamp"] == micros("2026-11-02T15:00:00+00:00")

    def test_openai_fields_the_schema_lacks_stay_in_metadata(self):
        meta = json.loads(normalize(self.record())["metadata"])
        assert meta == {"campaign": "q4", "finish_reason": "stop", "temperature": 0.2}

    def test_an_openai_record_without_choices_is_missing_its_response(self):
        record = self.record()
        record["response"]["choices"] = []
        with pytest.raises(InvalidRecord, match="missing response"):
            normalize(record)


class TestMappedRecords:
    def test_a_mapping_file_renames_nested_fields(self, tmp_path):
        path = tmp_path / "mapping.json"
        path.write_text(
            json.dumps(
                {
                    "request_id": "trace.id",
                    "timestamp": "trace.start",
                    "prompt": "input.text",
                    "response": "output.text",
                }
            )
        )
        record = {
            "trace": {"id": "t1", "start": "2026-11-02T10:00:00Z"},
            "input": {"text": "hello"},
            "output": {"text": "hi there"},
            "env": "prod",
        }
        row = normalize(record, load_mapping(path))
        assert (row["request_id"], row["prompt"], row["response"]) == (
            "t1",
            "hello",
            "hi there",
        )
        assert json.loads(row["metadata"]) == {"env": "prod"}

    def test_a_mapping_naming_an_unknown_field_is_refused(self, tmp_path):
        path = tmp_path / "mapping.json"
        path.write_text(json.dumps({"request_id": "id", "colour": "c"}))
        with pytest.raises(ConfigError, match=r"fields the schema lacks: \['colour'\]"):
            load_mapping(path)

    def test_a_mapping_that_is_not_an_object_is_refused(self, tmp_path):
        path = tmp_path / "mapping.json"
        path.write_text("[1, 2]")
        with pytest.raises(ConfigError, match="must be a JSON object"):
            load_mapping(path)


class TestInvalidRecords:
    @pytest.mark.parametrize(
        ("line", "reason"),
        [
            (b'{"request_id": ', "not JSON"),
            (b"[1, 2]", "not an object: a JSON list"),
            (b'"text"', "not an object: a JSON str"),
            (b'{"prompt": "\xff\xfe"}', "invalid UTF-8"),
        ],
    )
    def test_a_line_that_is_not_a_json_object_is_refused(self, line, reason):
        with pytest.raises(InvalidRecord, match=reason):
            parse_line(line)

    @pytest.mark.parametrize(
        ("overrides", "reason"),
        [
            ({"request_id": ...}, "missing request_id"),
            ({"request_id": ""}, "missing request_id"),
            ({"timestamp": ...}, "missing timestamp"),
            ({"timestamp": "yesterday"}, "unparseable timestamp: 'yesterday'"),
            ({"timestamp": 1e30}, "out of range: timestamp"),
            ({"timestamp": True}, "wrong type: timestamp"),
            ({"prompt": ...}, "missing prompt or messages"),
            ({"response": ...}, "missing response"),
            ({"response": 12}, "wrong type: response must be a string, got int"),
            (
                {"latency_ms": "fast"},
                "wrong type: latency_ms must be a number, got str",
            ),
            ({"latency_ms": -5}, "out of range: latency_ms"),
            ({"prompt_tokens": 2.5}, "wrong type: prompt_tokens must be an integer"),
            ({"completion_tokens": -1}, "out of range: completion_tokens"),
            (
                {"feedback": 5},
                "out of range: feedback must be -1, 0, \\+1 or null, got 5",
            ),
            ({"feedback": True}, "out of range: feedback"),
            (
                {"request_id": ["a"]},
                "wrong type: request_id must be a string, got list",
            ),
            ({"user_id": {"a": 1}}, "wrong type: user_id must be a string, got dict"),
            ({"messages": "hi"}, "wrong type: messages must be a list"),
            (
                {"messages": [{"content": "no role"}]},
                "messages\\[0\\] must be an object with a role",
            ),
        ],
    )
    def test_an_invalid_record_is_refused_with_its_reason(self, overrides, reason):
        with pytest.raises(InvalidRecord, match=reason):
            normalize(flat(**overrides))


def test_an_openai_record_without_a_response_object_says_the_response_is_missing():
    record = {
        "id": "c1",
        "created_at": "2026-11-02T10:00:00Z",
        "request": {"messages": [{"role": "user", "content": "hi"}]},
    }
    with pytest.raises(InvalidRecord, match="missing response"):
        normalize(record)
