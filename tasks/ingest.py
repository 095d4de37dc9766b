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

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from driftloop.errors import DriftloopError, InvalidRecord
from driftloop.schema import INTERACTION_SCHEMA, QUARANTINE_SCHEMA
from driftloop.settings import IngestSettings
from driftloop.storage import ObjectInfo, Store, iter_lines
from tasks.lake import DedupIndex, Entry, Lake, id_hash, object_id
from tasks.records import normalize, parse_line

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


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
    uri = source.describe(info.key)
    oid = object_id(uri, info.etag)
    result = ObjectResult(info)
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    fresh: list[int] = []
    in_object: set[int] = set()
    parts: list[str] = []
    landed: list[int] = []
    chunk = 0
    now = datetime.now(UTC)
    try:
        for line_no, raw, record in _records(source, info):
            result.read += 1
            try:
                if record is None:
                    record = parse_line(raw)
                row = normalize(record, mapping)
            except InvalidRecord as exc:
                bad.append(
                    {
                        "source": uri,
                        "source_line": line_no,
                        "raw": raw,
                        "reason": exc.reason,
                        "quarantined_at": now,
                    }
                )
                continue
            h = id_hash(row["request_id"])
            if h in in_object:
                result.duplicates += 1
                continue
            in_object.add(h)
            fresh.append(h)
            row["source"], row["source_line"] = uri, line_no
            rows.append(row)
            if len(rows) >= settings.rows_per_part:
                written, kept = _flush(lake, rows, fresh, index, oid, chunk, result)
                parts, landed, rows, fresh, chunk = (
                    parts + written,
                    landed + kept,
                    [],
                    [],
                    chunk + 1,
                )
        written, kept = _flush(lake, rows, fresh, index, oid, chunk, result)
        parts, landed = parts + written, landed + kept
    except (OSError, EOFError, ValueError, DriftloopError, pa.ArrowException) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        log.warning("object=%s failed, left for the next run: %s", uri, result.error)
        return result, None
    except Exception as exc:  # botocore's errors share no base with the ones above
        if type(exc).__module__.split(".")[0] not in {"botocore", "urllib3", "zlib"}:
            raise
        result.error = f"{type(exc).__name__}: {exc}"
        log.warning("object=%s failed, left for the next run: %s", uri, result.error)
        return result, None
    if bad:
        result.quarantined = len(bad)
        parts.append(
            lake.write_quarantine(pa.Table.from_pylist(bad, QUARANTINE_SCHEMA), oid)
        )
    index.add(landed)
    entry = Entry(
        oid,
        uri,
        info.etag,
        info.size,
        result.read,
        result.landed,
        result.quarantined,
        result.duplicates,
        parts,
        sorted(landed),
    )
    return result, entry


def _flush(
    lake: Lake,
    rows: list[dict[str, Any]],
    hashes: list[int],
    index: DedupIndex,
    oid: str,
    chunk: int,
    result: ObjectResult,
) -> tuple[list[str], list[int]]:
    """Drop rows already in the lake, write the rest as this chunk's parts."""
    seen = index.seen(hashes)
    keep = [row for row, dup in zip(rows, seen, strict=True) if not dup]
    landed = [h for h, dup in zip(hashes, seen, strict=True) if not dup]
    result.duplicates += len(rows) - len(keep)
    result.landed += len(keep)
    if not keep:
        return [], []
    table = pa.Table.from_pylist(keep, INTERACTION_SCHEMA)
    return lake.write_interactions(table, oid, chunk), landed


def _records(
    source: Store, info: ObjectInfo
) -> Iterator[tuple[int, bytes, dict | None]]:
    """Yield (line number, raw bytes, parsed record or None) for every record."""
    if info.key.endswith(".parquet"):
        yield from _parquet_records(source, info)
        return
    stream = source.open(info.key)
    try:
        if info.key.endswith(".gz"):
            stream = gzip.GzipFile(fileobj=stream)
        for line_no, line in enumerate(iter_lines(stream), start=1):
            if line.strip():
                yield line_no, line, None
    finally:
        stream.close()


def _parquet_records(
    source: Store, info: ObjectInfo
) -> Iterator[tuple[int, bytes, dict]]:
    # Parquet needs random access; spool the object to disk rather than memory.
    with tempfile.TemporaryFile() as spool:
        stream = source.open(info.key)
        try:
            shutil.copyfileobj(stream, spool, 1 << 20)
        finally:
            stream.close()
        spool.seek(0)
        row_no = 0
        for batch in pq.ParquetFile(spool).iter_batches(batch_size=10_000):
            for record in batch.to_pylist():
                row_no += 1
                yield row_no, orjson.dumps(record, default=str), record
