"""The lake: hive-partitioned Parquet parts, a quarantine, and the manifest.

A part becomes visible only once a manifest segment names it, so a crash between
writing data and committing leaves nothing half-written: the orphan part is ignored by
readers and overwritten, byte for byte, when its object is ingested again (part names
derive from the object's identity, so a rerun writes the same names).

Runs that write the manifest (ingest, compaction) take turns through the lake lock;
readers need no lock, since a segment appears whole or not at all.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import logging
import os
import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from driftloop.errors import StorageError
from driftloop.schema import INTERACTION_SCHEMA, QUARANTINE_SCHEMA
from driftloop.settings import LakeLockSettings
from driftloop.storage import (
    Lock,
    LockHeld,
    LockUnsupported,
    ObjectMissing,
    Store,
    describe_holder,
)

log = logging.getLogger(__name__)

INTERACTIONS = "interactions"
QUARANTINE = "quarantine"
MANIFEST = "_manifest"
LOCK = "_lock"
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


def sorted_unique(values: np.ndarray, in_place: bool = False) -> np.ndarray:
    """The distinct values of an array of hashes, sorted (in place if `in_place`).

    Not np.unique: since NumPy 2.3 it goes through a hash table, which on millions of
    random 64-bit hashes is over ten times slower than sorting and needs several times
    the memory (a month of traffic took 3 s and 250 MB more per run). A stable sort
    (timsort) also merges already sorted runs, such as the index and a new batch, in
    about linear time.
    """
    if in_place:
        values.sort(kind="stable")
    else:
        values = np.sort(values, kind="stable")
    keep = np.empty(len(values), dtype=bool)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values if keep.all() else values[keep]


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
            self.recent.append(sorted_unique(hashes))
        if len(self.recent) > 16:
            # Insert the few new hashes in place: one copy of the index, not three.
            batch = sorted_unique(np.concatenate(self.recent))
            batch = batch[~_members(self.landed, batch)]
            self.landed = np.insert(
                self.landed, np.searchsorted(self.landed, batch), batch
            )
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


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid may have no name
        return str(os.getuid())


class _NoLock:
    def check(self) -> None:
        pass

    def release(self) -> None:
        pass


class CorruptParquet(StorageError):
    """A lake file is not readable Parquet of the expected shape."""


class Lake:
    """Read and write the lake through a store (folder or S3 prefix).

    Reads skip a committed part that is corrupt or missing, with a warning, and record
    it in `unreadable` (its path and why) for the caller to report; a manifest segment
    that cannot be read stops the read instead, as dedup cannot be trusted without it.
    """

    def __init__(self, store: Store, lock: LakeLockSettings | None = None) -> None:
        self.store = store
        self.uri = store.uri
        self.lock_settings = lock or LakeLockSettings()
        self.unreadable: dict[str, str] = {}
        self._held: Lock | None = None

    # Lock

    @contextmanager
    def lock(self, purpose: str, run_id: str | None = None) -> Iterator[None]:
        """Hold the lake lock, waiting up to the configured timeout for another run.

        A run that still finds the lock held after `timeout_s` fails with a LockHeld
        error naming the holder. Waiting, rather than failing at once, lets a hand run
        started during a scheduled one go on once that one is done (finding its objects
        committed). Re-entrant within this Lake: an inner use only checks that the lock
        is still ours.
        """
        if self._held is not None:
            self._held.check()
            yield
            return
        holder = {
            "owner": f"{_user()}@{socket.gethostname()}",
            "pid": os.getpid(),
            "purpose": purpose,
            "run_id": run_id,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "token": uuid.uuid4().hex,
        }
        self._held = self._acquire(holder)
        try:
            yield
        finally:
            held, self._held = self._held, None
            held.release()

    def _acquire(self, holder: dict) -> Lock:
        timeout = self.lock_settings.timeout_s

        def waiting(state) -> None:
            if state.attempt_number == 1:
                log.info(
                    "lake=%s locked by %s; waiting up to %.0f s",
                    self.uri,
                    describe_holder(state.outcome.exception().holder),
                    timeout,
                )

        retrying = Retrying(
            retry=retry_if_exception_type(LockHeld),
            stop=stop_after_delay(timeout),
            # Jittered, so that runs waiting together do not knock together.
            wait=wait_random_exponential(multiplier=0.2, max=5),
            before_sleep=waiting,
            reraise=True,
        )
        try:
            return retrying(
                self.store.try_lock, LOCK, holder, self.lock_settings.lease_s
            )
        except LockUnsupported as exc:
            if self.lock_settings.required:
                raise
            log.warning("lake=%s runs unlocked: %s", self.uri, exc)
            return _NoLock()
        except LockHeld as exc:
            raise LockHeld(
                f"lake {self.uri} is locked by another run: {exc}. Waited "
                f"{timeout:.0f} s (DRIFTLOOP_LAKE_LOCK_TIMEOUT_S); let that run "
                "finish, then run this again",
                exc.holder,
            ) from None

    # Manifest

    def manifest(self, columns: list[str] | None = None) -> pa.Table:
        """Every committed object, one row each (the first commit wins).

        `columns` limits what is read: the request-id hashes are most of the
        manifest, and only dedup needs them.
        """
        if columns is not None:
            columns = list(dict.fromkeys(["object_id", *columns]))
        # A compaction elsewhere may delete a segment between our listing and our
        # read; its rows are in the merged segment by then, so list again.
        for attempt in range(3):
            try:
                tables = [self._read_parquet(i.key, columns) for i in self._segments()]
                break
            except ObjectMissing:
                if attempt == 2:
                    raise
            except CorruptParquet as exc:
                raise CorruptParquet(
                    f"{exc}. This manifest segment records committed objects and their "
                    "request ids: restore it from a backup or an earlier object "
                    "version; deleting it would land those objects again"
                ) from exc
        if not tables:
            schema = MANIFEST_SCHEMA
            return (
                schema.empty_table().select(columns)
                if columns
                else schema.empty_table()
            )
        table = pa.concat_tables(tables)
        # The same object can be committed twice by runs that raced; keep one row.
        _, first = np.unique(
            table["object_id"].to_numpy(zero_copy_only=False), return_index=True
        )
        if len(first) == table.num_rows:
            return table  # the usual case: no copy of the hashes
        return table.take(pa.array(np.sort(first)))

    def index(self, manifest: pa.Table | None = None) -> DedupIndex:
        """Load the request-id index from the manifest."""
        manifest = self.manifest(["id_hashes"]) if manifest is None else manifest
        flat = pc.list_flatten(manifest["id_hashes"]).chunks
        # One copy of the hashes, our own, sorted where it lies.
        hashes = np.concatenate(
            [np.empty(0, np.uint64), *(chunk.to_numpy() for chunk in flat)]
        )
        return DedupIndex(landed=sorted_unique(hashes, in_place=True))

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
        # Checked last: a lease lost while the table was built still stops the commit.
        with self.lock("commit", run_id):
            self._write_parquet(key, table)
        return key

    def compact(self) -> int:
        """Merge manifest segments once there are many; return how many merged."""
        with self.lock("compact"):
            segments = list(self._segments())
            if len(segments) <= COMPACT_AFTER:
                return 0
            merged = pa.concat_tables(self._read_parquet(i.key) for i in segments)
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
        manifest = self.manifest(columns=["parts"])
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
        schema = (
            INTERACTION_SCHEMA
            if columns is None
            else pa.schema([INTERACTION_SCHEMA.field(c) for c in columns])
        )
        return self._read_parts(self.committed_parts(start, end), schema, columns)

    def read_quarantine(self) -> pa.Table:
        parts = self.committed_parts(prefix=QUARANTINE)
        return self._read_parts(parts, QUARANTINE_SCHEMA)

    def _read_parts(
        self, keys: list[str], schema: pa.Schema, columns: list[str] | None = None
    ) -> pa.Table:
        """Read parts into one table, skipping (and recording) unreadable ones."""
        tables = []
        for key in keys:
            try:
                tables.append(self._read_parquet(key, columns, schema))
            except (CorruptParquet, ObjectMissing) as exc:
                path = self.store.describe(key)
                self.unreadable[path] = str(exc)
                log.warning("part=%s unreadable, skipped: %s", path, exc)
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def _write_parquet(self, key: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self.store.write_bytes(key, sink.getvalue())

    def _read_parquet(
        self,
        key: str,
        columns: list[str] | None = None,
        schema: pa.Schema | None = None,
    ) -> pa.Table:
        raw = self.store.read_bytes(key)
        try:
            table = pq.read_table(io.BytesIO(raw), columns=columns)
            return table if schema is None else table.cast(schema)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise CorruptParquet(
                f"corrupt Parquet file {self.store.describe(key)} "
                f"({len(raw):,} bytes): {exc}"
            ) from exc
