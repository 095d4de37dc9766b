"""Turn one raw log record, in any accepted shape, into a canonical interaction.

Three shapes are accepted: flat records named like the schema, OpenAI chat-completions
request/response pairs, and any other naming through a mapping file. Whatever the
schema lacks is kept in `metadata`, never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from driftloop.errors import ConfigError, InvalidRecord
from driftloop.schema import INPUT_FIELDS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_EPOCH_S, _MAX_EPOCH_S = 0, 253_402_300_800  # 1970 to the end of year 9999
_MAX_INT64 = 2**63 - 1
_STRING_FIELDS = (
    "model",
    "model_version",
    "feedback_comment",
    "corrected_response",
    "task_outcome",
    "session_id",
    "user_id",
)
# OpenAI records carry these in their own `metadata`; lift them to the schema.
_LIFTABLE = INPUT_FIELDS - {"messages", "prompt", "response", "metadata"}


def parse_line(line: bytes) -> dict[str, Any]:
    """Decode one JSON line into an object, or say why it cannot be one."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRecord("invalid UTF-8") from None
        raise InvalidRecord(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRecord(f"not an object: a JSON {type(value).__name__}")
    return value


def load_mapping(path: str | Path) -> dict[str, str]:
    """Read a mapping file: a JSON object from schema field to dotted source path."""
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read mapping file {path}: {exc}") from exc
    if not isinstance(mapping, dict) or not all(
        isinstance(v, str) for v in mapping.values()
    ):
        raise ConfigError(
            f"mapping file {path} must be a JSON object of schema field to source "
            "path, "
            'e.g. {"request_id": "trace.id", "prompt": "input.text"}'
        )
    unknown = sorted(set(mapping) - INPUT_FIELDS)
    if unknown:
        raise ConfigError(
            f"mapping file {path} names fields the schema lacks: {unknown}; "
            f"known fields are {sorted(INPUT_FIELDS)}"
        )
    return mapping


def normalize(
    record: dict[str, Any], mapping: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return one record's canonical fields; raise InvalidRecord to quarantine it."""
    if mapping:
        flat = _apply_mapping(record, mapping)
    elif isinstance(record.get("request"), dict):
        flat = _from_openai(record)
    else:
        flat = _from_flat(record)
    return _validate(flat)


def _from_flat(record: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in record.items():
        if key in INPUT_FIELDS:
            flat[key] = value
        else:
            extra[key] = value
    meta = flat.get("metadata")
    if isinstance(meta, dict):
        extra = {**meta, **extra}
    elif meta is not None:
        extra["metadata"] = meta
    flat["metadata"] = extra
    return flat


def _from_openai(record: dict[str, Any]) -> dict[str, Any]:
    request = record["request"]
    response = (
        record.get("response") if isinstance(record.get("response"), dict) else {}
    )
    extra = {k: v for k, v in record.items() if k not in {"request", "response"}}
    meta = extra.pop("metadata", None)
    flat: dict[str, Any] = {}
    if isinstance(meta, dict):
        for key, value in meta.items():
            if key in _LIFTABLE:
                flat[key] = value
            else:
                extra[key] = value
    flat["request_id"] = extra.pop("id", None) or response.get("id")
    flat["timestamp"] = (
        extra.pop("timestamp", None)
        or extra.pop("created_at", None)
        or response.get("created")
    )
    flat.setdefault("model", request.get("model") or response.get("model"))
    flat["messages"] = request.get("messages")
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message") or {}
        flat["response"] = message.get("content") if isinstance(message, dict) else None
        if choices[0].get("finish_reason"):
            extra["finish_reason"] = choices[0]["finish_reason"]
    usage = response.get("usage")
    if isinstance(usage, dict):
        flat.setdefault("prompt_tokens", usage.get("prompt_tokens"))
        flat.setdefault("completion_tokens", usage.get("completion_tokens"))
    for key in ("temperature", "max_tokens", "top_p"):
        if key in request:
            extra[key] = request[key]
    flat["metadata"] = extra
    return flat


def _apply_mapping(
    record: dict[str, Any], mapping: Mapping[str, str]
) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    used_roots = set()
    for field, path in mapping.items():
        value: Any = record
        for step in path.split("."):
            value = value.get(step) if isinstance(value, dict) else None
        flat[field] = value
        used_roots.add(path.split(".", 1)[0])
    flat["metadata"] = {k: v for k, v in record.items() if k not in used_roots}
    return flat


def _validate(flat: dict[str, Any]) -> dict[str, Any]:
    request_id = flat.get("request_id")
    if request_id is None or request_id == "":
        raise InvalidRecord("missing request_id")
    if isinstance(request_id, (int, float)) and not isinstance(request_id, bool):
        request_id = str(request_id)
    elif not isinstance(request_id, str):
        raise InvalidRecord(_wrong_type("request_id", "a string", request_id))

    timestamp = flat.get("timestamp")
    if timestamp is None or timestamp == "":
        raise InvalidRecord("missing timestamp")
    micros = _timestamp_micros(timestamp)

    messages = _messages(flat.get("messages"))
    prompt = flat.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidRecord(_wrong_type("prompt", "a string", prompt))
    if prompt is None and messages:
        prompt = next(
            (m["content"] for m in reversed(messages) if m["role"] == "user"), None
        )
    if prompt is None:
        raise InvalidRecord(
            "missing prompt or messages: no user turn to monitor or train on"
        )
    if not messages:
        messages = [{"role": "user", "content": prompt}]

    response = flat.get("response")
    if response is None:
        raise InvalidRecord("missing response")
    if not isinstance(response, str):
        raise InvalidRecord(_wrong_type("response", "a string", response))

    out: dict[str, Any] = {
        "request_id": request_id,
        "timestamp": micros,
        "messages": messages,
        "prompt": prompt,
        "response": response,
        "latency_ms": _number("latency_ms", flat.get("latency_ms")),
        "prompt_tokens": _count("prompt_tokens", flat.get("prompt_tokens")),
        "completion_tokens": _count("completion_tokens", flat.get("completion_tokens")),
        "feedback": _feedback(flat.get("feedback")),
    }
    for field in _STRING_FIELDS:
        value = flat.get(field)
        if value is None or isinstance(value, str):
            out[field] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[field] = str(value)
        else:
            raise InvalidRecord(_wrong_type(field, "a string", value))
    # Null extras carry nothing; dropping them keeps both ingest paths identical.
    metadata = {k: v for k, v in (flat.get("metadata") or {}).items() if v is not None}
    out["metadata"] = (
        orjson.dumps(metadata, default=str, option=orjson.OPT_SORT_KEYS).decode()
        if metadata
        else None
    )
    return out


def _timestamp_micros(value: Any) -> int:
    """Microseconds since the epoch, UTC; naive times are taken as UTC."""
    if isinstance(value, bool):
        raise InvalidRecord(
            _wrong_type("timestamp", "an ISO-8601 string or epoch", value)
        )
    if isinstance(value, datetime):  # from Parquet sources
        return _micros(value)
    if isinstance(value, (int, float)):
        seconds = value / 1000 if abs(value) > 1e11 else value  # epoch ms vs s
        if not _MIN_EPOCH_S <= seconds < _MAX_EPOCH_S:
            raise InvalidRecord(
                f"out of range: timestamp {value} is not a plausible epoch"
            )
        return round(seconds * 1_000_000)
    if not isinstance(value, str):
        raise InvalidRecord(
            _wrong_type("timestamp", "an ISO-8601 string or epoch", value)
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecord(f"unparseable timestamp: {value[:64]!r}") from None
    return _micros(parsed)


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _messages(value: Any) -> list[dict[str, str]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidRecord(_wrong_type("messages", "a list of {role, content}", value))
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRecord(
                f"wrong type: messages[{i}] must be an object with a role"
            )
        content = message.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = "".join(
                part.get("text", "") for part in content if isinstance(part, dict)
            )
        if content is not None and not isinstance(content, str):
            raise InvalidRecord(
                _wrong_type(f"messages[{i}].content", "a string", content)
            )
        out.append({"role": message["role"], "content": content or ""})
    return out


def _number(field: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRecord(_wrong_type(field, "a number", value))
    if not 0 <= value < float("inf"):
        raise InvalidRecord(
            f"out of range: {field} must be a non-negative number, got {value}"
        )
    return float(value)


def _count(field: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecord(_wrong_type(field, "an integer", value))
    if not 0 <= value <= _MAX_INT64:
        raise InvalidRecord(
            f"out of range: {field} must be between 0 and 2^63-1, got {value}"
        )
    return value


def _feedback(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or value not in (-1, 0, 1):
        raise InvalidRecord(
            f"out of range: feedback must be -1, 0, +1 or null, got {value!r}"
        )
    return int(value)


def _wrong_type(field: str, expected: str, value: Any) -> str:
    return f"wrong type: {field} must be {expected}, got {type(value).__name__}"
