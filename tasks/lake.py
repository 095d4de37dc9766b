"""The lake: hive-partitioned Parquet parts, a quarantine, and the manifest.

A part becomes visible only once a manifest segment names it, so a crash between
writing data and committing leaves nothing half-written: the orphan part is ignored by
readers and overwritten, byte for byte, when its object is ingested again (part names
derive from the object's identity, so a rerun writes the same names).
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from driftloop.errors import StorageError
from driftloop.schema import INTERACTION_SCHEMA, QUARANTINE_SCHEMA
from driftloop.storage import Store

INTERACTIONS = "interactions"
QUARANTINE = "quarantine"
MANIFEST = "_manifest"
# Segments merged into one once there are more than this many.
COMPACT_AFTER = 32

MANIFEST_SCHEMA = pa.schema(
    [
        ("object_id", pa.string()),
        ("uri", pa.string()),
        ("etag", pa.string()),
        ("size", pa.int64()),
        ("read", pa.int64()),
        ("landed", pa.int64()),
        ("quarantined", pa.int64()),
        ("duplicates", pa.int64()),
        ("parts", pa.list_(pa.string())),
        ("id_hashes", pa.list_(pa.uint64())),
        ("committed_at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
    ]
)
_DATE_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})/")


def id_hashes(request_ids: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
    """Stable 64-bit hashes of request ids (SipHash with a fixed key, via pandas)."""
    if isinstance(request_ids, pa.ChunkedArray | pa.Array):
        values = request_ids.to_numpy(zero_copy_only=False)
    else:
        values = np.array(request_ids, dtype=object)
    return pd.util.hash_array(values.astype(object), categorize=False)


def object_id(uri: str, etag: str) -> str:
    """Name an object version; part names derive from it, so reruns overwrite."""
    return hashlib.sha256(f"{uri}\0{etag}".encode()).hexdigest()[:24]


def _members(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    at = np.searchsorted(haystack, needles)
    found = at < len(haystack)
    found[found] = haystack[at[found]] == needles[found]
    return found


@dataclass
class DedupIndex:
    """The request ids already landed, as sorted arrays of 64-bit hashes.

    Sorted numpy arrays keep a million ids in 8 MB, where a Python set of strings
    would take over 100 MB. Two different ids collide with odds of about n^2 / 2^65
    (3e-8 at a million records); a collision is counted as a duplicate.
    """

    landed: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    recent: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.landed) + sum(len(r) for r in self.recent)

    def seen(self, hashes: np.ndarray) -> np.ndarray:
        """For each hash, whether it is already in the index."""
        found = _members(self.landed, hashes)
        for batch in self.recent:
            found |= _members(batch, hashes)
        return found

    def add(self, hashes: np.ndarray) -> None:
        if len(hashes):
            self.recent.append(np.unique(hashes))
        if len(self.recent) > 16:
            self.landed = np.union1d(self.landed, np.concatenate(self.recent))
            self.recent = []


@dataclass(frozen=True)
class Entry:
    """One object's commit record in the manifest."""

    object_id: str
    uri: str
    etag: str
    size: int
    read: int
    landed: int
    quarantined: int
    duplicates: int
    parts: list[str]
    id_hashes: np.ndarray


class Lake:
    """Read and write the lake through a store (folder or S3 prefix)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.uri = store.uri

    # Manifest

    def manifest(self) -> pa.Table:
        """Every committed object, one row each (the first commit wins)."""
        tables = [self._read_parquet(info.key) for info in self._segments()]
        if not tables:
            return MANIFEST_SCHEMA.empty_table()
        table = pa.concat_tables(tables).combine_chunks()
        # The same object can be committed twice by runs that raced; keep one row.
        _, first = np.unique(
            table["object_id"].to_numpy(zero_copy_only=False), return_index=True
        )
        return table.take(pa.array(np.sort(first)))

    def index(self, manifest: pa.Table | None = None) -> DedupIndex:
        """Load the request-id index from the manifest."""
        manifest = self.manifest() if manifest is None else manifest
        hashes = pc.list_flatten(manifest["id_hashes"]).to_numpy(zero_copy_only=False)
        return DedupIndex(landed=np.unique(hashes.astype(np.uint64)))

    def commit(self, entries: list[Entry], run_id: str) -> str:
        """Write one manifest segment naming `entries`; this is the commit point."""
        now = datetime.now(UTC)
        rows = [
            {**entry.__dict__, "id_hashes": [], "committed_at": now, "run_id": run_id}
            for entry in entries
        ]
        table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
        # Build the hash lists in Arrow: a million Python ints would cost seconds.
        lengths = np.array([len(e.id_hashes) for e in entries], dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        values = np.concatenate([np.asarray(e.id_hashes, np.uint64) for e in entries])
        hashes = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
        index = table.schema.get_field_index("id_hashes")
        table = table.set_column(index, MANIFEST_SCHEMA.field("id_hashes"), hashes)
        key = f"{MANIFEST}/seg-{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
        self._write_parquet(key, table)
        return key

    def compact(self) -> int:
        """Merge manifest segments once there are many; return how many merged."""
        segments = list(self._segments())
        if len(segments) <= COMPACT_AFTER:
            return 0
        merged = pa.concat_tables(self._read_parquet(info.key) for info in segments)
        now = datetime.now(UTC)
        self._write_parquet(
            f"{MANIFEST}/seg-{now:%Y%m%dT%H%M%S%f}-compact.parquet", merged
        )
        for info in segments:
            self.store.delete(info.key)
        return len(segments)

    def _segments(self) -> Iterator:
        return (i for i in self.store.list(MANIFEST) if i.key.endswith(".parquet"))

    # Parts

    def write_interactions(self, table: pa.Table, oid: str, chunk: int) -> list[str]:
        """Write one part per date partition for a chunk of an object's rows."""
        days = pc.strftime(table["timestamp"], format="%Y-%m-%d")
        keys = []
        for day in sorted(pc.unique(days).to_pylist()):
            rows = table.filter(pc.equal(days, day))
            key = f"{INTERACTIONS}/date={day}/part-{oid}-{chunk:04d}.parquet"
            self._write_parquet(key, rows)
            keys.append(key)
        return keys

    def write_quarantine(self, table: pa.Table, oid: str) -> str:
        key = f"{QUARANTINE}/part-{oid}.parquet"
        self._write_parquet(key, table)
        return key

    def committed_parts(
        self,
        start: date | None = None,
        end: date | None = None,
        prefix: str = INTERACTIONS,
    ) -> list[str]:
        """Committed part keys under `prefix`, within [start, end] dates when given."""
        manifest = self.manifest()
        keys = sorted(
            k
            for k in pc.list_flatten(manifest["parts"]).to_pylist()
            if k.startswith(prefix)
        )
        if start is None and end is None:
            return keys
        lo, hi = (start or date.min).isoformat(), (end or date.max).isoformat()
        return [
            k for k in keys if (m := _DATE_DIR.search(k)) and lo <= m.group(1) <= hi
        ]

    def read_interactions(
        self,
        start: date | None = None,
        end: date | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Read the committed interactions whose date lies in [start, end]."""
        parts = self.committed_parts(start, end)
        schema = (
            INTERACTION_SCHEMA
            if columns is None
            else pa.schema([INTERACTION_SCHEMA.field(c) for c in columns])
        )
        tables = [self._read_parquet(key, columns) for key in parts]
        return pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()

    def read_quarantine(self) -> pa.Table:
        tables = [
            self._read_parquet(k) for k in self.committed_parts(prefix=QUARANTINE)
        ]
        return pa.concat_tables(tables) if tables else QUARANTINE_SCHEMA.empty_table()

    def _write_parquet(self, key: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self.store.write_bytes(key, sink.getvalue())

    def _read_parquet(self, key: str, columns: list[str] | None = None) -> pa.Table:
        try:
            return pq.read_table(
                io.BytesIO(self.store.read_bytes(key)), columns=columns
            )
        except pa.ArrowInvalid as exc:
            raise StorageError(
                f"corrupt Parquet file {self.store.describe(key)}: {exc}"
            ) from exc
