"""Dataset versions in the lake: write them once, list them, diff them, forget users.

A version lives under `datasets/<name>/<version>/`. Its files are written first and
`card.json` last, so a version without a card is an interrupted write: it is invisible
to readers and the next run with the same content overwrites it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from driftloop.errors import ConfigError
from driftloop.storage import Store

DATASETS = "datasets"
TOMBSTONES = "tombstones"
CARD = "card.json"
# Columns of examples.parquet, the dataset's full form; the JSONL files carry only
# the chat messages that fine-tuning tools read.
EXAMPLE_COLUMNS = [
    "example_id",
    "request_id",
    "model",
    "timestamp",
    "session_id",
    "user_hash",
    "source",
    "topic",
    "drift",
    "split",
    "prompt",
    "target",
    "messages",
    "origin",
    "origin_line",
    "content_hash",
]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def dataset_name(model: str | None) -> str:
    """A folder-safe dataset name for a use case; odd names get a hash suffix."""
    raw = model or "all"
    safe = _UNSAFE.sub("_", raw).strip("._-")[:80]
    if safe != raw or not safe:
        # Two odd names must not collide once cleaned, nor escape the lake.
        safe = f"{safe or 'model'}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"
    return safe


def user_hash(user_id: str | None) -> str | None:
    """The pseudonym a dataset stores for a user: tombstones match on it."""
    if user_id is None or user_id == "":
        return None
    return hashlib.sha256(f"driftloop-user:{user_id}".encode()).hexdigest()[:20]


def content_version(examples: pd.DataFrame, config: dict[str, Any]) -> str:
    """Hash the examples and the configuration: the same inputs, the same version."""
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    ordered = examples.sort_values("example_id", kind="stable")
    for row in ordered[["example_id", "content_hash", "split"]].itertuples(False):
        digest.update("\x1f".join(row).encode() + b"\x1e")
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class VersionRef:
    """Where a dataset version lives and what its card says."""

    name: str
    version: str
    card: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{DATASETS}/{self.name}/{self.version}"


class DatasetStore:
    """Dataset versions and tombstones inside a lake's store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def uri(self, name: str, version: str) -> str:
        return self.store.describe(f"{DATASETS}/{name}/{version}")

    # Versions

    def versions(self, name: str | None = None) -> list[VersionRef]:
        """Every committed version (those with a card), oldest first."""
        prefix = f"{DATASETS}/{name}/" if name else f"{DATASETS}/"
        refs = []
        for info in self.store.list(prefix):
            parts = info.key.split("/")
            if len(parts) == 4 and parts[3] == CARD:
                card = json.loads(self.store.read_bytes(info.key))
                refs.append(VersionRef(parts[1], parts[2], card))
        return sorted(refs, key=lambda r: (r.card.get("created_at", ""), r.version))

    def find(self, version: str) -> VersionRef:
        """Look a version up by id, unique id prefix, or `<name>@latest`."""
        if version.endswith("@latest"):
            refs = self.versions(version.removesuffix("@latest"))
            if refs:
                return refs[-1]
        matches = [r for r in self.versions() if r.version.startswith(version)]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(f"{r.name}/{r.version}" for r in self.versions()[-5:])
        if not matches:
            raise ConfigError(
                f"dataset version {version!r} is not in the lake "
                f"{self.store.describe()}; latest versions: {known or 'none yet'}. "
                "Run `driftloop datasets list`."
            )
        raise ConfigError(
            f"dataset version prefix {version!r} matches {len(matches)} versions; "
            "give more characters"
        )

    def exists(self, name: str, version: str) -> bool:
        return any(r.version == version for r in self.versions(name))

    def parent(self, name: str, window_start: datetime | None) -> VersionRef | None:
        """The version this one builds on: the latest whose window ended by `start`.

        Rerunning a window must not build on its own earlier output, or the replayed
        examples would change the content and mint a new version every time.
        """
        refs = self.versions(name)
        if window_start is not None:
            refs = [
                r
                for r in refs
                if datetime.fromisoformat(r.card["window"]["end"]) <= window_start
            ]
        return refs[-1] if refs else None

    def examples(self, ref: VersionRef) -> pd.DataFrame:
        data = self.store.read_bytes(f"{ref.key}/examples.parquet")
        return pq.read_table(io.BytesIO(data)).to_pandas()

    def write(
        self, name: str, version: str, examples: pd.DataFrame, card: dict[str, Any]
    ) -> str:
        """Write the version's files, then its card; return the version's URI."""
        key = f"{DATASETS}/{name}/{version}"
        for split in ("train", "validation"):
            rows = examples[examples["split"] == split]
            self.store.write_bytes(f"{key}/{split}.jsonl", _chat_jsonl(rows))
        sink = io.BytesIO()
        table = pa.Table.from_pandas(
            examples[EXAMPLE_COLUMNS].reset_index(drop=True), preserve_index=False
        )
        pq.write_table(table, sink, compression="zstd")
        self.store.write_bytes(f"{key}/examples.parquet", sink.getvalue())
        self.store.write_bytes(f"{key}/card.md", render_card(card).encode())
        self.store.write_bytes(f"{key}/{CARD}", json.dumps(card, indent=2).encode())
        return self.uri(name, version)

    # Right to erasure

    def forget(self, user_id: str, reason: str | None = None) -> dict[str, Any]:
        """Record a tombstone for a user; later versions leave their examples out."""
        hashed = user_hash(user_id)
        if hashed is None:
            raise ConfigError("forget needs a non-empty --user-id")
        record = {
            "user_hash": hashed,
            "requested_at": datetime.now(UTC).isoformat(),
            "reason": reason or "",
        }
        key = f"{TOMBSTONES}/{hashed}.json"
        if not any(i.key == key for i in self.store.list(TOMBSTONES)):
            self.store.write_bytes(key, json.dumps(record).encode())
        return record

    def tombstones(self) -> frozenset[str]:
        """The pseudonyms of every forgotten user."""
        return frozenset(
            info.key.rsplit("/", 1)[-1].removesuffix(".json")
            for info in self.store.list(TOMBSTONES)
            if info.key.endswith(".json")
        )

    def versions_with_user(self, user_id: str) -> list[VersionRef]:
        """The committed versions that hold at least one example of this user."""
        hashed = user_hash(user_id)
        found = []
        for ref in self.versions():
            data = self.store.read_bytes(f"{ref.key}/examples.parquet")
            users = pq.read_table(io.BytesIO(data), columns=["user_hash"])
            if hashed in set(users["user_hash"].to_pylist()):
                found.append(ref)
        return found


def _chat_jsonl(rows: pd.DataFrame) -> bytes:
    lines = (
        json.dumps({"messages": json.loads(m)}, ensure_ascii=False)
        for m in rows["messages"]
    )
    return "".join(line + "\n" for line in lines).encode()


def diff(old: pd.DataFrame, new: pd.DataFrame) -> dict[str, Any]:
    """Examples added, removed and changed between versions, by topic and source."""
    old_ids = dict(zip(old["example_id"], old["content_hash"], strict=True))
    new_ids = dict(zip(new["example_id"], new["content_hash"], strict=True))
    added = new[~new["example_id"].isin(old_ids.keys())]
    removed = old[~old["example_id"].isin(new_ids.keys())]
    changed = new[
        new["example_id"].map(lambda i: i in old_ids and old_ids[i] != new_ids[i])
    ]

    def by(frame: pd.DataFrame, column: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in frame[column].value_counts().items()}

    return {
        "added": len(added),
        "removed": len(removed),
        "changed": len(changed),
        "unchanged": len(new) - len(added) - len(changed),
        "by_topic": _merge(by(added, "topic"), by(removed, "topic")),
        "by_source": _merge(by(added, "source"), by(removed, "source")),
    }


def _merge(added: dict[str, int], removed: dict[str, int]) -> dict[str, dict]:
    keys = sorted(set(added) | set(removed))
    return {k: {"added": added.get(k, 0), "removed": removed.get(k, 0)} for k in keys}


def render_card(card: dict[str, Any]) -> str:
    """The dataset card for people: what went in, what was filtered, and how."""
    lines = [
        f"# Dataset {card['name']} version {card['version']}",
        "",
        f"- Use case: `{card['model']}`",
        f"- Log window: {card['window']['start']} to {card['window']['end']}",
        f"- Examples: {card['examples']} (train {card['splits']['train']}, "
        f"validation {card['splits']['validation']})",
        f"- Parent version: {card.get('parent') or 'none'}",
        f"- Monitor run: {card.get('monitor_run') or 'none'}",
        f"- Lake: {card['lake']}",
        "",
        "## Stages",
        "",
        "| stage | examples after | removed |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {stage} | {count} | {card['removed'].get(stage, '')} |"
        for stage, count in card["stages"].items()
    ]
    lines += ["", "## Sources", ""]
    lines += _counts(card["sources"].items())
    lines += ["", "## Topics", ""]
    lines += _counts(card["topics"].items())
    lines += ["", "## Configuration", "", "```json"]
    lines += [json.dumps(card["config"], indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def _counts(items: Iterable[tuple[str, int]]) -> list[str]:
    return [f"- {name}: {count}" for name, count in items] or ["- none"]
