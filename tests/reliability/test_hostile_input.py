"""Hostile input: no line crashes ingestion or vanishes; no name escapes the lake.

Property tests (hypothesis) throw arbitrary lines at the whole ingest path and
arbitrary names at the places where names taken from logs become paths.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftloop.errors import StorageError
from driftloop.storage import LocalStore, safe_key
from tasks.datasets import dataset_name
from tasks.ingest import ingest_objects, pending_objects
from tasks.lake import Lake
from tasks.records import InvalidRecord, normalize, parse_line
from tasks.registry import model_name

# JSON values of every shape, and records close enough to valid to reach the checks.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
near_records = st.fixed_dictionaries(
    {},
    optional={
        "request_id": st.one_of(st.text(max_size=10), json_values),
        "timestamp": st.one_of(
            st.sampled_from(["2026-11-02T10:00:00Z", "2026-13-40", "", "yesterday"]),
            st.integers(-(2**62), 2**62),
            json_values,
        ),
        "model": st.one_of(st.text(max_size=10), json_values),
        "prompt": st.one_of(st.text(max_size=30), json_values),
        "response": st.one_of(st.text(max_size=30), json_values),
        "messages": json_values,
        "latency_ms": json_values,
        "feedback": json_values,
        "metadata": json_values,
    },
)
valid_records = st.fixed_dictionaries(
    {
        "request_id": st.text(min_size=1, max_size=6),  # repeats: duplicates too
        "timestamp": st.sampled_from(["2026-11-02T10:00:00Z", 1_793_354_400]),
        "model": st.sampled_from(["support-assistant", "../../escape", "día"]),
        "prompt": st.text(max_size=30),
        "response": st.text(max_size=30),
    },
    optional={"metadata": json_values, "feedback": st.sampled_from([-1, 0, 1])},
)
lines = st.one_of(
    valid_records.map(lambda r: json.dumps(r).encode()),
    near_records.map(lambda r: json.dumps(r).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=120),
).map(lambda line: line.replace(b"\n", b" "))


def _accepted(line: bytes) -> dict | None:
    """The record-by-record path's verdict on one line: the record, or None."""
    try:
        return normalize(parse_line(line))
    except InvalidRecord:
        return None


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(lines, min_size=1, max_size=25))
def test_every_line_lands_is_quarantined_with_a_reason_or_is_a_duplicate(block):
    with tempfile.TemporaryDirectory() as root:
        logs = Path(root) / "logs"
        logs.mkdir()
        (logs / "hostile.jsonl").write_bytes(b"\n".join(block) + b"\n")
        source, lake = LocalStore(logs), Lake(LocalStore(Path(root) / "lake"))
        report = ingest_objects(source, lake, pending_objects(source, lake))

        assert report.failed_objects == []
        blank = sum(1 for line in block if not line.strip())
        assert report.read == len(block) - blank
        assert report.read == report.landed + report.quarantined + report.duplicates
        quarantine = lake.read_quarantine()
        assert quarantine.num_rows == report.quarantined
        assert all(reason.strip() for reason in quarantine["reason"].to_pylist())
        landed = lake.read_interactions()
        assert landed.num_rows == report.landed
        # What lands is exactly what the validator accepts, each request id once.
        accepted = {r["request_id"] for line in block if (r := _accepted(line))}
        assert set(landed["request_id"].to_pylist()) == accepted
        assert landed.num_rows == len(accepted)


HOSTILE_NAMES = [
    "../../escape",
    "/etc/passwd",
    "a/../../b",
    "nul\x00byte",
    "%2e%2e/%2e%2e/escape",
    "..",
    ".",
    "",
    "C:\\windows\\system32",
    "día 1 #+ name",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_use_case_name_becomes_one_safe_folder_name(name):
    safe = dataset_name(name)
    assert safe not in {"", ".", ".."}
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert "%" not in safe
    assert safe_key(f"datasets/{safe}/v1/card.json") == f"datasets/{safe}/v1/card.json"
    assert model_name(name) == f"driftloop-{safe}"


def test_two_hostile_names_never_share_a_folder():
    assert len({dataset_name(n) for n in HOSTILE_NAMES}) == len(HOSTILE_NAMES)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_a_store_key_is_refused_or_stays_under_the_store_root(key):
    with tempfile.TemporaryDirectory() as root:
        store = LocalStore(Path(root) / "lake")
        try:
            store.write_bytes(key, b"x")
        except StorageError:
            return
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            return  # a key naming a folder: refused by the file system, inside
        written = [p for p in Path(root).rglob("*") if p.is_file()]
        assert len(written) == 1
        assert written[0].resolve().is_relative_to((Path(root) / "lake").resolve())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_a_use_case_name_never_leaves_the_datasets_folder(name):
    safe = dataset_name(name)
    with tempfile.TemporaryDirectory() as root:
        store = LocalStore(root)
        store.write_bytes(f"datasets/{safe}/v1/card.json", b"{}")
        (written,) = [p for p in Path(root).rglob("*") if p.is_file()]
        assert written.parent.parent.parent == Path(root) / "datasets"
