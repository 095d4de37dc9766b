"""Land source objects in the lake, each record exactly once.

For every object: read = landed + quarantined + duplicates. An object that cannot be
read (a corrupt gzip, a dropped connection) is reported and left uncommitted, so the
next run retries it; the rest of the run goes on.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from driftloop.errors import DriftloopError, InvalidRecord
from driftloop.schema import INTERACTION_SCHEMA, QUARANTINE_SCHEMA
from driftloop.settings import IngestSettings
from driftloop.storage import ObjectInfo, Store, iter_lines
from tasks.fast_records import normalize_block
from tasks.lake import DedupIndex, Entry, Lake, id_hashes, object_id
from tasks.records import normalize, parse_line

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
# Lines normalised together by Arrow; a block that fails is bisected down to this.
BLOCK_LINES = 4096
MIN_FAST_BLOCK = 16


@dataclass
class ObjectResult:
    """What happened to one object."""

    info: ObjectInfo
    read: int = 0
    landed: int = 0
    quarantined: int = 0
    duplicates: int = 0
    error: str | None = None


@dataclass
class IngestReport:
    """The counts of one ingest run, as `--json` prints them."""

    objects: int = 0
    read: int = 0
    landed: int = 0
    quarantined: int = 0
    duplicates: int = 0
    failed_objects: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, result: ObjectResult) -> None:
        self.objects += 1
        if result.error is not None:
            self.failed_objects.append(result.info.key)
            self.errors[result.info.key] = result.error
            return
        self.read += result.read
        self.landed += result.landed
        self.quarantined += result.quarantined
        self.duplicates += result.duplicates

    def summary(self) -> dict[str, Any]:
        keys = (
            "objects",
            "read",
            "landed",
            "quarantined",
            "duplicates",
            "failed_objects",
        )
        return {k: getattr(self, k) for k in keys}


def is_log_object(key: str) -> bool:
    """Whether a key is a log file; `_` and `.` names are skipped, as in Hive."""
    if any(part.startswith(("_", ".")) for part in key.split("/")):
        return False
    return key.endswith(SUFFIXES)


def pending_objects(source: Store, lake: Lake) -> list[ObjectInfo]:
    """The source's log objects that no manifest entry has committed yet."""
    manifest = lake.manifest()
    done = set(manifest["object_id"].to_pylist())
    return [
        info
        for info in source.list()
        if is_log_object(info.key)
        and object_id(source.describe(info.key), info.etag) not in done
    ]


def ingest_objects(
    source: Store,
    lake: Lake,
    objects: list[ObjectInfo],
    mapping: Mapping[str, str] | None = None,
    settings: IngestSettings | None = None,
    on_object: Callable[[ObjectResult], None] | None = None,
) -> IngestReport:
    """Land `objects` in order, committing the manifest every few objects."""
    settings = settings or IngestSettings()
    run_id = uuid.uuid4().hex
    manifest = lake.manifest()
    index = lake.index(manifest)
    report = IngestReport()
    batch: list[Entry] = []
    for info in objects:
        result, entry = land_object(source, lake, info, index, mapping, settings)
        report.add(result)
        if entry is not None:
            batch.append(entry)
        if len(batch) >= settings.objects_per_commit:
            lake.commit(batch, run_id)
            batch = []
        if on_object is not None:
            on_object(result)
    if batch:
        lake.commit(batch, run_id)
    lake.compact()
    return report


def land_object(
    source: Store,
    lake: Lake,
    info: ObjectInfo,
    index: DedupIndex,
    mapping: Mapping[str, str] | None,
    settings: IngestSettings,
) -> tuple[ObjectResult, Entry | None]:
    """Read one object, write its parts and quarantine; return its manifest entry."""
    landing = _Landing(source.describe(info.key), info, lake, index, mapping, settings)
    try:
        for block in read_blocks(source, info):
            landing.add(block)
        landing.write_chunk()
    except (OSError, EOFError, ValueError, DriftloopError, pa.ArrowException) as exc:
        return landing.failed(exc), None
    except Exception as exc:  # botocore's errors share no base with the ones above
        if type(exc).__module__.split(".")[0] not in {"botocore", "urllib3", "zlib"}:
            raise
        return landing.failed(exc), None
    return landing.result, landing.commit_entry()


class _Landing:
    """One object while it is read: rows kept, lines refused, parts written."""

    def __init__(
        self,
        uri: str,
        info: ObjectInfo,
        lake: Lake,
        index: DedupIndex,
        mapping: Mapping[str, str] | None,
        settings: IngestSettings,
    ) -> None:
        self.uri, self.info, self.lake, self.index = uri, info, lake, index
        self.mapping, self.settings = mapping, settings
        self.oid = object_id(uri, info.etag)
        self.result = ObjectResult(info)
        self.now = datetime.now(UTC)
        self.bad: list[dict[str, Any]] = []
        self.kept: list[pa.Table] = []
        self.kept_rows = 0
        self.in_object = DedupIndex()
        self.landed: list[np.ndarray] = []
        self.parts: list[str] = []
        self.fast = mapping is None

    def add(self, block: Block) -> None:
        self.result.read += len(block)
        for table in self._normalize(block):
            self._keep_new(table)
        if self.kept_rows >= self.settings.rows_per_part:
            self.write_chunk()

    def _normalize(self, block: Block) -> list[pa.Table]:
        """Canonical rows of a block in line order; refused lines go to `bad`."""
        if self.fast and len(block) >= MIN_FAST_BLOCK and block.records is None:
            table = normalize_block(block.raws)
            if table is not None:
                return [self._with_lineage(table, block.lines)]
            head, tail = block.split()
            head_table = normalize_block(head.raws)
            if head_table is not None:
                return [
                    self._with_lineage(head_table, head.lines),
                    *self._normalize(tail),
                ]
            if normalize_block(tail.raws) is None:
                # Both halves fail: the object's shape needs Python, not one bad line.
                self.fast = False
            else:
                return [*self._normalize(head), *self._normalize(tail)]
        return self._normalize_each(block)

    def _normalize_each(self, block: Block) -> list[pa.Table]:
        rows = []
        records = block.records or [None] * len(block)
        for line_no, raw, record in zip(block.lines, block.raws, records, strict=True):
            try:
                row = normalize(
                    parse_line(raw) if record is None else record, self.mapping
                )
            except InvalidRecord as exc:
                self.bad.append(
                    {
                        "source": self.uri,
                        "source_line": line_no,
                        "raw": raw,
                        "reason": exc.reason,
                        "quarantined_at": self.now,
                    }
                )
                continue
            row["source"], row["source_line"] = self.uri, line_no
            rows.append(row)
        return [pa.Table.from_pylist(rows, INTERACTION_SCHEMA)] if rows else []

    def _with_lineage(self, table: pa.Table, line_numbers: list[int]) -> pa.Table:
        table = table.append_column("source", pa.array([self.uri] * table.num_rows))
        table = table.append_column("source_line", pa.array(line_numbers, pa.int64()))
        return table.cast(INTERACTION_SCHEMA)

    def _keep_new(self, table: pa.Table) -> None:
        """Keep rows whose request id is new to the lake, the object and the block."""
        hashes = id_hashes(table["request_id"])
        _, first = np.unique(hashes, return_index=True)
        new = np.zeros(len(hashes), dtype=bool)
        new[first] = True
        new &= ~self.index.seen(hashes) & ~self.in_object.seen(hashes)
        self.in_object.add(hashes)
        kept = table if new.all() else table.filter(pa.array(new))
        self.landed.append(hashes[new])
        self.result.duplicates += table.num_rows - kept.num_rows
        if kept.num_rows:
            self.kept.append(kept)
            self.kept_rows += kept.num_rows

    def write_chunk(self) -> None:
        if not self.kept:
            return
        table = pa.concat_tables(self.kept)
        chunk = sum(1 for p in self.parts if p.startswith("interactions/"))
        self.parts += self.lake.write_interactions(table, self.oid, chunk)
        self.result.landed += table.num_rows
        self.kept, self.kept_rows = [], 0

    def failed(self, exc: Exception) -> ObjectResult:
        self.result.error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "object=%s failed, left for the next run: %s", self.uri, self.result.error
        )
        return self.result

    def commit_entry(self) -> Entry:
        if self.bad:
            self.result.quarantined = len(self.bad)
            table = pa.Table.from_pylist(self.bad, QUARANTINE_SCHEMA)
            self.parts.append(self.lake.write_quarantine(table, self.oid))
        landed = np.concatenate(self.landed) if self.landed else np.empty(0, np.uint64)
        self.index.add(landed)
        r = self.result
        return Entry(
            self.oid,
            self.uri,
            self.info.etag,
            self.info.size,
            r.read,
            r.landed,
            r.quarantined,
            r.duplicates,
            self.parts,
            np.sort(landed),
        )


@dataclass
class Block:
    """Consecutive records of one object: line numbers, raw bytes, parsed (Parquet)."""

    lines: list[int]
    raws: list[bytes]
    records: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.lines)

    def split(self) -> tuple[Block, Block]:
        half = len(self) // 2
        return (
            Block(self.lines[:half], self.raws[:half]),
            Block(self.lines[half:], self.raws[half:]),
        )


def read_blocks(
    source: Store, info: ObjectInfo, size: int = BLOCK_LINES
) -> Iterator[Block]:
    """Yield an object's records in blocks; blank lines carry nothing: skipped."""
    if info.key.endswith(".parquet"):
        yield from _parquet_blocks(source, info, size)
        return
    stream = source.open(info.key)
    try:
        if info.key.endswith(".gz"):
            stream = gzip.GzipFile(fileobj=stream)
        yield from _line_blocks(iter_lines(stream), size)
    finally:
        stream.close()


def _line_blocks(lines: Iterator[bytes], size: int) -> Iterator[Block]:
    block = Block([], [])
    for line_no, line in enumerate(lines, start=1):
        if not line or line.isspace():
            continue
        block.lines.append(line_no)
        block.raws.append(line)
        if len(block.lines) >= size:
            yield block
            block = Block([], [])
    if block.lines:
        yield block


def _parquet_blocks(source: Store, info: ObjectInfo, size: int) -> Iterator[Block]:
    # Parquet needs random access; spool the object to disk rather than memory.
    with tempfile.TemporaryFile() as spool:
        stream = source.open(info.key)
        try:
            shutil.copyfileobj(stream, spool, 1 << 20)
        finally:
            stream.close()
        spool.seek(0)
        first = 1
        for batch in pq.ParquetFile(spool).iter_batches(batch_size=size):
            records = batch.to_pylist()
            raws = [orjson.dumps(r, default=str) for r in records]
            yield Block(list(range(first, first + len(records))), raws, records)
            first += len(records)


def normalize_objects(path: str) -> tuple[pa.Table, IngestReport]:
    """Read a log file or folder into canonical rows in memory, as ingest lands them."""
    from pathlib import Path

    from driftloop.storage import MemoryStore, open_store

    local = Path(path)
    if local.is_file():
        source: Store = open_store(str(local.parent))
        objects = [i for i in source.list() if i.key == local.name]
    else:
        source = open_store(path)
        objects = [i for i in source.list() if is_log_object(i.key)]
    if not objects:
        raise DriftloopError(
            f"no log objects at {path}: expected a .jsonl, .jsonl.gz or .parquet file, "
            "or a folder holding them"
        )
    lake = Lake(MemoryStore())
    report = ingest_objects(source, lake, objects)
    return lake.read_interactions(), report
