"""The canonical interaction schema every stage reads and writes."""

from __future__ import annotations

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

# Field order is the column order in the lake. Descriptions double as the README's
# schema table (`driftloop schema` prints them), so they are written for users.
FIELDS: list[tuple[str, pa.DataType, bool, str]] = [
    ("request_id", pa.string(), False, "Unique id of the request; the dedup key."),
    (
        "timestamp",
        pa.timestamp("us", tz="UTC"),
        False,
        "When the request was served, UTC.",
    ),
    ("model", pa.string(), True, "Use case served, e.g. `support-assistant`."),
    ("model_version", pa.string(), True, "Version of the model that answered."),
    (
        "messages",
        pa.list_(MESSAGE),
        False,
        "Conversation sent to the model (role/content), without the answer.",
    ),
    (
        "prompt",
        pa.string(),
        False,
        "The last user turn; taken from `messages` when absent.",
    ),
    ("response", pa.string(), False, "The model's answer."),
    ("latency_ms", pa.float64(), True, "Time to answer in milliseconds."),
    ("prompt_tokens", pa.int64(), True, "Tokens in the request."),
    ("completion_tokens", pa.int64(), True, "Tokens in the answer."),
    ("feedback", pa.int8(), True, "User feedback: -1, 0, +1, or null when none."),
    ("feedback_comment", pa.string(), True, "Free-text comment left with feedback."),
    ("corrected_response", pa.string(), True, "A person's fix of the answer."),
    ("task_outcome", pa.string(), True, "Outcome label, e.g. `resolved`, `escalated`."),
    ("session_id", pa.string(), True, "Conversation id shared by its turns."),
    ("user_id", pa.string(), True, "End user id (pseudonymous where possible)."),
    (
        "metadata",
        pa.string(),
        True,
        "JSON object of the input fields the schema lacks (nulls omitted).",
    ),
    (
        "source",
        pa.string(),
        False,
        "Object the record came from (credentials stripped).",
    ),
    ("source_line", pa.int64(), False, "1-based line (or row) number in that object."),
]

INTERACTION_SCHEMA = pa.schema(
    [pa.field(name, dtype, nullable=nullable) for name, dtype, nullable, _ in FIELDS]
)
COLUMNS = [name for name, *_ in FIELDS]
DESCRIPTIONS = {name: doc for name, _, _, doc in FIELDS}

# Names a flat input record may use; anything else goes to `metadata`.
INPUT_FIELDS = frozenset(COLUMNS) - {"source", "source_line"}

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_line", pa.int64(), nullable=False),
        pa.field("raw", pa.binary(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
