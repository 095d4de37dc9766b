"""The Arrow path normalises exactly as the record-by-record path does, or declines."""

from __future__ import annotations

import json
import random

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftloop.schema import INTERACTION_SCHEMA
from driftloop.storage import LocalStore
from tasks.fast_records import normalize_block
from tasks.ingest import ingest_objects, pending_objects
from tasks.lake import Lake
from tasks.records import InvalidRecord, normalize, parse_line
from tests.tasks.test_ingest import record, write_jsonl

CANONICAL = [
    f.name for f in INTERACTION_SCHEMA if f.name not in {"source", "source_line"}
]

text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
timestamps = st.one_of(
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.datetimes().map(lambda d: d.isoformat() + "+05:30"),
    st.sampled_from(
        ["2026-11-02T10:00:00", "2026-11-02 10:00:00Z", "nope", 1_793_354_400]
    ),
)
# Mostly valid records, so the Arrow path is really exercised, with odd values mixed in.
records = st.fixed_dictionaries(
    {
        "request_id": st.text(min_size=1, max_size=12),
        "timestamp": timestamps,
        "response": st.one_of(text, text, text, st.none(), st.integers()),
    },
    optional={
        "prompt": st.one_of(text, st.none()),
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant", "system"])},
                optional={"content": st.one_of(text, st.none())},
            ),
            max_size=3,
        ),
        "latency_ms": st.one_of(st.floats(0, 1e6), st.integers(0, 10**6), st.just(-1)),
        "prompt_tokens": st.one_of(st.integers(0, 10**6), st.none(), st.just(-1)),
        "feedback": st.one_of(st.sampled_from([-1, 0, 1, None]), st.just(2)),
        "user_id": st.one_of(text, st.none()),
        "channel": st.one_of(text, st.none()),
        "shard": st.one_of(st.integers(-(2**40), 2**40), st.none()),
        "beta": st.one_of(st.booleans(), st.none()),
    },
)


def slow(lines: list[bytes]) -> list[dict | None]:
    out = []
    for line in lines:
        try:
            out.append(normalize(parse_line(line)))
        except InvalidRecord:
            out.append(None)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=6))
def test_a_block_the_arrow_path_accepts_matches_the_record_by_record_path(block):
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in block]
    fast = normalize_block(lines)
    expected = slow(lines)
    if fast is None:
        return
    assert None not in expected, "the Arrow path accepted a record Python refuses"
    table = pa.Table.from_pylist(expected, INTERACTION_SCHEMA.remove(18).remove(17))
    assert fast.select(CANONICAL).to_pylist() == table.select(CANONICAL).to_pylist()


def test_seeded_valid_blocks_are_accepted_and_match_row_for_row():
    rng = random.Random(7)
    alphabet = 'abc xyz "quoted" back\\slash\nnew line\ttab é 漢 🙂'
    for _ in range(30):
        block = []
        for _ in range(32):
            rec = record(
                rng.randrange(10**6), channel=rng.choice(["web", None, alphabet])
            )
            rec["timestamp"] = (
                f"2026-11-0{rng.randrange(1, 9)}T0{rng.randrange(10)}:00:00+01:00"
            )
            rec["feedback"] = rng.choice([-1, 0, 1, None])
            if rng.random() < 0.5:
                rec["messages"] = [
                    {"role": "user", "content": rng.choice(["hi", alphabet])}
                ]
                del rec["prompt"]
            block.append(json.dumps(rec, ensure_ascii=rng.random() < 0.5).encode())
        fast = normalize_block(block)
        assert fast is not None
        expected = pa.Table.from_pylist(
            slow(block), INTERACTION_SCHEMA.remove(18).remove(17)
        )
        assert (
            fast.select(CANONICAL).to_pylist() == expected.select(CANONICAL).to_pylist()
        )


def test_clean_simulated_lines_take_the_arrow_path():
    lines = [
        json.dumps(record(i, channel="web", shard=i % 3)).encode() for i in range(64)
    ]
    table = normalize_block(lines)
    assert table is not None and table.num_rows == 64


def test_one_bad_line_in_a_large_object_is_quarantined_and_every_other_line_lands(
    tmp_path,
):
    lines = [record(i) for i in range(3000)]
    lines[1776] = b'{"request_id": "half a line'
    write_jsonl(tmp_path / "src" / "a.jsonl", lines)
    source, lake = LocalStore(tmp_path / "src"), Lake(LocalStore(tmp_path / "lake"))
    report = ingest_objects(source, lake, pending_objects(source, lake))
    assert (report.landed, report.quarantined) == (2999, 1)
    (bad,) = lake.read_quarantine().to_pylist()
    assert bad["source_line"] == 1777
    landed = lake.read_interactions()
    assert sorted(landed["source_line"].to_pylist()) == [
        n for n in range(1, 3001) if n != 1777
    ]


def test_an_object_in_openai_shape_lands_through_the_python_path(tmp_path):
    lines = [
        {
            "id": f"c{i}",
            "created_at": "2026-11-02T10:00:00Z",
            "request": {"messages": [{"role": "user", "content": f"q{i}"}]},
            "response": {
                "choices": [{"message": {"role": "assistant", "content": "a"}}]
            },
        }
        for i in range(100)
    ]
    write_jsonl(tmp_path / "src" / "a.jsonl", lines)
    source, lake = LocalStore(tmp_path / "src"), Lake(LocalStore(tmp_path / "lake"))
    report = ingest_objects(source, lake, pending_objects(source, lake))
    assert report.landed == 100
    assert lake.read_interactions().sort_by("source_line")["prompt"][0].as_py() == "q0"


def test_invalid_utf8_inside_a_clean_looking_block_is_quarantined_not_landed(tmp_path):
    lines = [record(i) for i in range(100)]
    lines[5] = (
        b'{"request_id": "bad", "timestamp": "2026-11-02T10:00:00Z", "prompt": "caf\xe9", "response": "r"}'
    )
    lines[6] = (
        b'{"request_id": "lone", "timestamp": "2026-11-02T10:00:00Z", "prompt": "\\ud800", "response": "r"}'
    )
    write_jsonl(tmp_path / "src" / "a.jsonl", lines)
    source, lake = LocalStore(tmp_path / "src"), Lake(LocalStore(tmp_path / "lake"))
    report = ingest_objects(source, lake, pending_objects(source, lake))
    assert (report.landed, report.quarantined) == (98, 2)
    reasons = {
        r["source_line"]: r["reason"] for r in lake.read_quarantine().to_pylist()
    }
    assert reasons[6] == "invalid UTF-8"
    assert reasons[7].startswith("not JSON")
