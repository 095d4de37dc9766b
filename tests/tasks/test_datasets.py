"""Dataset versions in a lake: safe names, content versions, lookups, diffs, erasure."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from driftloop.errors import ConfigError
from driftloop.storage import LocalStore
from tasks.datasets import (
    EXAMPLE_COLUMNS,
    DatasetStore,
    content_version,
    dataset_name,
    diff,
    user_hash,
)

CONFIG = {"seed": 0, "min_chars": 8}


def example(example_id: str, **fields: Any) -> dict[str, Any]:
    """One row of examples.parquet; the content hash follows the messages."""
    prompt = fields.pop("prompt", f"Where is my parcel {example_id}?")
    target = fields.pop("target", f"Your parcel {example_id} arrives tomorrow.")
    messages = json.dumps(
        [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": target},
        ]
    )
    row = {
        "example_id": example_id,
        "request_id": f"req-{example_id}",
        "model": "support-assistant",
        "timestamp": pd.Timestamp("2026-11-02 09:00", tz="UTC"),
        "session_id": f"session-{example_id}",
        "user_hash": user_hash("alice"),
        "source": "quality",
        "topic": "billing",
        "drift": False,
        "split": "train",
        "prompt": prompt,
        "target": target,
        "messages": messages,
        "origin": "s3://logs/2026-11-02.jsonl",
        "origin_line": 1,
        "content_hash": hashlib.sha256(messages.encode()).hexdigest(),
    }
    return row | fields


def examples(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))[EXAMPLE_COLUMNS]


def card(
    name: str,
    version: str,
    frame: pd.DataFrame,
    start: str = "2026-11-01T00:00:00+00:00",
    end: str = "2026-11-08T00:00:00+00:00",
    created_at: str = "2026-11-08T01:00:00+00:00",
) -> dict[str, Any]:
    splits = frame["split"].value_counts()
    return {
        "name": name,
        "version": version,
        "model": "support-assistant",
        "created_at": created_at,
        "window": {"start": start, "end": end},
        "examples": len(frame),
        "splits": {s: int(splits.get(s, 0)) for s in ("train", "validation")},
        "parent": None,
        "monitor_run": None,
        "lake": "/lake",
        "stages": {"window": 10, "selected": len(frame)},
        "removed": {"selected": 10 - len(frame)},
        "sources": {"quality": len(frame)},
        "topics": {"billing": len(frame)},
        "config": CONFIG,
    }


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(LocalStore(tmp_path))


def write(
    store: DatasetStore, name: str, version: str, *rows: dict[str, Any], **when: str
) -> None:
    frame = examples(*(rows or (example("e1"),)))
    store.write(name, version, frame, card(name, version, frame, **when))


# --- names and pseudonyms -----------------------------------------------------------


class TestDatasetName:
    def test_a_plain_name_is_kept_as_it_is(self) -> None:
        assert dataset_name("support-assistant_v2.1") == "support-assistant_v2.1"

    def test_no_model_names_the_dataset_all(self) -> None:
        assert dataset_name(None) == "all"

    @pytest.mark.parametrize(
        "model", ["../../etc/passwd", "a/b", "..", "nul\0byte", "two words", "/abs"]
    )
    def test_an_odd_name_becomes_one_safe_folder_name(
        self, model: str, tmp_path: Path
    ) -> None:
        name = dataset_name(model)
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name)
        assert "/" not in name
        assert ".." not in name
        LocalStore(tmp_path).write_bytes(f"datasets/{name}/probe", b"x")
        assert [p.name for p in (tmp_path / "datasets").iterdir()] == [name]

    def test_an_odd_name_keeps_a_readable_stem_and_a_hash_suffix(self) -> None:
        assert re.fullmatch(r"two_words-[0-9a-f]{8}", dataset_name("two words"))

    def test_two_odd_names_that_clean_alike_do_not_collide(self) -> None:
        names = {dataset_name(m) for m in ("a/b", "a b", "a\0b", "a_b")}
        assert len(names) == 4

    def test_a_very_long_name_is_shortened_and_kept_distinct(self) -> None:
        first, second = dataset_name("x" * 100 + "1"), dataset_name("x" * 100 + "2")
        assert len(first) <= 90
        assert first != second


class TestUserHash:
    def test_a_user_gets_the_same_pseudonym_every_time(self) -> None:
        assert user_hash("alice") == user_hash("alice")
        assert user_hash("alice") != user_hash("bob")
        assert "alice" not in user_hash("alice")

    @pytest.mark.parametrize("user_id", [None, ""])
    def test_no_user_has_no_pseudonym(self, user_id: str | None) -> None:
        assert user_hash(user_id) is None


# --- content versions ---------------------------------------------------------------


class TestContentVersion:
    def test_the_same_rows_in_another_order_give_the_same_version(self) -> None:
        frame = examples(example("e1"), example("e2"), example("e3"))
        shuffled = frame.iloc[[2, 0, 1]]
        assert content_version(frame, CONFIG) == content_version(shuffled, CONFIG)

    def test_a_changed_target_gives_another_version(self) -> None:
        before = examples(example("e1"), example("e2"))
        after = examples(example("e1"), example("e2", target="It arrived today."))
        assert content_version(before, CONFIG) != content_version(after, CONFIG)

    def test_a_changed_split_gives_another_version(self) -> None:
        before = examples(example("e1"), example("e2"))
        after = examples(example("e1"), example("e2", split="validation"))
        assert content_version(before, CONFIG) != content_version(after, CONFIG)

    def test_a_changed_configuration_gives_another_version(self) -> None:
        frame = examples(example("e1"))
        assert content_version(frame, CONFIG) != content_version(
            frame, CONFIG | {"seed": 1}
        )

    def test_a_version_is_twelve_hex_characters(self) -> None:
        assert re.fullmatch(
            r"[0-9a-f]{12}", content_version(examples(example("e1")), {})
        )


# --- writing and finding versions ---------------------------------------------------


class TestWriteAndFind:
    def test_a_written_version_is_listed_with_its_card(
        self, store: DatasetStore
    ) -> None:
        write(store, "support", "abc111")
        (ref,) = store.versions()
        assert (ref.name, ref.version, ref.card["examples"]) == ("support", "abc111", 1)
        assert ref.key == "datasets/support/abc111"
        assert store.exists("support", "abc111")

    def test_write_puts_each_split_in_its_chat_jsonl_file(
        self, store: DatasetStore, tmp_path: Path
    ) -> None:
        write(
            store,
            "support",
            "abc111",
            example("e1"),
            example("e2", split="validation"),
            example("e3"),
        )
        folder = tmp_path / "datasets" / "support" / "abc111"
        train = [
            json.loads(x) for x in (folder / "train.jsonl").read_text().splitlines()
        ]
        validation = (folder / "validation.jsonl").read_text().splitlines()
        assert len(train) == 2
        assert len(validation) == 1
        assert train[0]["messages"][-1] == {
            "role": "assistant",
            "content": "Your parcel e1 arrives tomorrow.",
        }
        assert "# Dataset support version abc111" in (folder / "card.md").read_text()

    def test_written_examples_read_back_with_every_column(
        self, store: DatasetStore
    ) -> None:
        frame = examples(example("e1"), example("e2", topic="login"))
        store.write("support", "abc111", frame, card("support", "abc111", frame))
        back = store.examples(store.find("abc111"))
        assert list(back.columns) == EXAMPLE_COLUMNS
        assert back["topic"].tolist() == ["billing", "login"]

    def test_versions_are_listed_oldest_first_and_by_dataset(
        self, store: DatasetStore
    ) -> None:
        write(store, "support", "bbb", created_at="2026-11-09T00:00:00+00:00")
        write(store, "support", "aaa", created_at="2026-11-10T00:00:00+00:00")
        write(store, "sales", "ccc", created_at="2026-11-08T00:00:00+00:00")
        assert [r.version for r in store.versions()] == ["ccc", "bbb", "aaa"]
        assert [r.version for r in store.versions("support")] == ["bbb", "aaa"]

    def test_a_version_is_found_by_a_unique_prefix_in_any_dataset(
        self, store: DatasetStore
    ) -> None:
        write(store, "support", "abc111")
        write(store, "sales", "def222")
        assert store.find("def").name == "sales"
        assert store.find("abc111").version == "abc111"

    def test_an_unknown_version_is_refused_listing_the_latest_ones(
        self, store: DatasetStore, tmp_path: Path
    ) -> None:
        write(store, "support", "abc111")
        with pytest.raises(
            ConfigError,
            match=rf"dataset version 'zzz' is not in the lake {re.escape(str(tmp_path))}; latest "
            r"versions: support/abc111\. Run `driftloop datasets list`",
        ):
            store.find("zzz")

    def test_an_unknown_version_in_an_empty_lake_says_none_yet(
        self, store: DatasetStore
    ) -> None:
        with pytest.raises(ConfigError, match=r"latest versions: none yet"):
            store.find("abc")

    def test_an_ambiguous_prefix_is_refused_asking_for_more_characters(
        self, store: DatasetStore
    ) -> None:
        write(store, "support", "abc111")
        write(store, "support", "abc222")
        with pytest.raises(
            ConfigError,
            match=r"dataset version prefix 'abc' matches 2 versions; give more characters",
        ):
            store.find("abc")

    def test_a_version_folder_without_a_card_is_invisible(
        self, store: DatasetStore
    ) -> None:
        write(store, "support", "abc111")
        store.store.write_bytes("datasets/support/half00/examples.parquet", b"partial")
        store.store.write_bytes("datasets/support/half00/train.jsonl", b"")
        assert [r.version for r in store.versions()] == ["abc111"]
        assert not store.exists("support", "half00")
        with pytest.raises(ConfigError, match="is not in the lake"):
            store.find("half00")


class TestParent:
    @pytest.fixture
    def two_weeks(self, store: DatasetStore) -> DatasetStore:
        write(
            store,
            "support",
            "week1",
            start="2026-11-01T00:00:00+00:00",
            end="2026-11-08T00:00:00+00:00",
            created_at="2026-11-08T01:00:00+00:00",
        )
        write(
            store,
            "support",
            "week2",
            start="2026-11-08T00:00:00+00:00",
            end="2026-11-15T00:00:00+00:00",
            created_at="2026-11-15T01:00:00+00:00",
        )
        return store

    def test_the_parent_is_the_latest_version_whose_window_ended_by_the_start(
        self, two_weeks: DatasetStore
    ) -> None:
        start = datetime(2026, 11, 15, tzinfo=UTC)
        assert two_weeks.parent("support", start).version == "week2"

    def test_rerunning_a_window_does_not_build_on_its_own_output(
        self, two_weeks: DatasetStore
    ) -> None:
        start = datetime(2026, 11, 8, tzinfo=UTC)
        assert two_weeks.parent("support", start).version == "week1"

    def test_a_window_before_every_version_has_no_parent(
        self, two_weeks: DatasetStore
    ) -> None:
        assert two_weeks.parent("support", datetime(2026, 11, 1, tzinfo=UTC)) is None

    def test_without_a_start_the_parent_is_the_latest_version(
        self, two_weeks: DatasetStore
    ) -> None:
        assert two_weeks.parent("support", None).version == "week2"

    def test_other_datasets_are_never_parents(self, two_weeks: DatasetStore) -> None:
        assert two_weeks.parent("sales", None) is None


# --- diff ---------------------------------------------------------------------------


def test_diff_counts_added_removed_changed_and_unchanged_by_topic_and_source() -> None:
    old = examples(
        example("same"),
        example("edited"),
        example("gone", topic="login", source="feedback"),
    )
    new = examples(
        example("same"),
        example("edited", target="It arrived today."),
        example("fresh", topic="shipping", source="drift"),
        example("fresh2", topic="shipping", source="correction"),
    )
    assert diff(old, new) == {
        "added": 2,
        "removed": 1,
        "changed": 1,
        "unchanged": 1,
        "by_topic": {
            "login": {"added": 0, "removed": 1},
            "shipping": {"added": 2, "removed": 0},
        },
        "by_source": {
            "correction": {"added": 1, "removed": 0},
            "drift": {"added": 1, "removed": 0},
            "feedback": {"added": 0, "removed": 1},
        },
    }


def test_diff_of_a_version_with_itself_is_all_unchanged() -> None:
    frame = examples(example("e1"), example("e2"))
    assert diff(frame, frame) == {
        "added": 0,
        "removed": 0,
        "changed": 0,
        "unchanged": 2,
        "by_topic": {},
        "by_source": {},
    }


# --- right to erasure ---------------------------------------------------------------


class TestForget:
    def test_forgetting_a_user_writes_one_tombstone_under_their_pseudonym(
        self, store: DatasetStore, tmp_path: Path
    ) -> None:
        record = store.forget("alice", reason="GDPR request 17")
        assert record["user_hash"] == user_hash("alice")
        assert record["reason"] == "GDPR request 17"
        files = list((tmp_path / "tombstones").iterdir())
        assert [f.name for f in files] == [f"{user_hash('alice')}.json"]
        assert "alice" not in files[0].read_text()

    def test_forgetting_a_user_twice_keeps_the_first_tombstone(
        self, store: DatasetStore, tmp_path: Path
    ) -> None:
        first = store.forget("alice", reason="first")
        store.forget("alice", reason="second")
        (path,) = (tmp_path / "tombstones").iterdir()
        assert json.loads(path.read_text()) == first

    def test_tombstones_returns_every_forgotten_pseudonym(
        self, store: DatasetStore
    ) -> None:
        assert store.tombstones() == frozenset()
        store.forget("alice")
        store.forget("bob")
        assert store.tombstones() == {user_hash("alice"), user_hash("bob")}

    def test_versions_holding_a_user_are_found(self, store: DatasetStore) -> None:
        write(store, "support", "withalice", example("e1"))
        write(store, "support", "withbob", example("e2", user_hash=user_hash("bob")))
        write(store, "sales", "both", example("e3"), example("e4", user_hash=None))
        found = store.versions_with_user("alice")
        assert sorted(r.version for r in found) == ["both", "withalice"]
        assert store.versions_with_user("carol") == []

    @pytest.mark.parametrize("user_id", ["", None])
    def test_forgetting_no_user_is_refused(
        self, store: DatasetStore, user_id: str | None
    ) -> None:
        with pytest.raises(ConfigError, match="forget needs a non-empty --user-id"):
            store.forget(user_id)


def test_name_at_latest_finds_the_newest_version_of_that_dataset(tmp_path):
    store = DatasetStore(LocalStore(tmp_path))
    for version, created in (("aaa111", "2026-11-01"), ("bbb222", "2026-11-02")):
        store.store.write_bytes(
            f"datasets/support/{version}/card.json",
            json.dumps({"created_at": created, "window": {}}).encode(),
        )
    assert store.find("support@latest").version == "bbb222"
    with pytest.raises(ConfigError, match="is not in the lake"):
        store.find("sales@latest")
