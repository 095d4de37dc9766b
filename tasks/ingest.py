"""Land source objects in the lake, each record exactly once.

For every object: read = landed + quarantined + duplicates. An object that cannot be
read (a corrupt gzip, a dropped connection) is reported and left uncommitted, so the
next run retries it; the rest of the run goes on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from driftloop.errors import DriftloopError
from driftloop.schema import QUARANTINE_SCHEMA
from driftloop.settings import IngestSettings
from driftloop.storage import ObjectInfo, Store
from tasks.lake import DedupIndex, Entry, Lake, id_hashes, object_id
from tasks.reading import ObjectReader, read_blocks

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
# Objects up to this size are read ahead whole; larger ones stream block by block.
READ_AHEAD_MAX_BYTES = 64 << 20


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
    logs = [info for info in source.list() if is_log_object(info.key)]
    return _uncommitted(source, logs, lake.manifest(columns=["object_id"]))


def _uncommitted(
    source: Store, objects: list[ObjectInfo], manifest: pa.Table
) -> list[ObjectInfo]:
    done = set(manifest["object_id"].to_pylist())
    return [
        info
        for info in objects
        if object_id(source.describe(info.key), info.etag) not in done
    ]


def ingest_objects(
    source: Store,
    lake: Lake,
    objects: list[ObjectInfo],
    mapping: Mapping[str, str] | None = None,
    settings: IngestSettings | None = None,
    on_object: Callable[[ObjectResult], None] | None = None,
) -> IngestReport:
    """Land `objects` in order, committing the manifest every few objects.

    The whole run holds the lake lock (see `Lake.lock`), so two runs never decide
    duplicates against the same index; objects another run committed since they were
    planned are skipped.

    The next object is read and normalised in a second thread while the current one
    is deduplicated and written: Arrow and the store release the GIL, so the two
    overlap. Landing stays in order, so dedup decisions do not depend on timing.
    """
    settings = settings or IngestSettings()
    run_id = uuid.uuid4().hex
    report = IngestReport()
    with lake.lock("ingest", run_id):
        objects, index = _replan(source, lake, objects)
        batch: list[Entry] = []
        with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
            upcoming = (
                _read_ahead(pool, source, objects[0], mapping) if objects else None
            )
            for i, info in enumerate(objects):
                prepared = upcoming
                if i + 1 < len(objects):
                    upcoming = _read_ahead(pool, source, objects[i + 1], mapping)
                result, entry = land_object(
                    source, lake, info, prepared, index, mapping, settings
                )
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


def _replan(
    source: Store, lake: Lake, objects: list[ObjectInfo]
) -> tuple[list[ObjectInfo], DedupIndex]:
    """Under the lock: drop objects committed since planning; load the index."""
    manifest = lake.manifest(columns=["id_hashes"])
    todo = _uncommitted(source, objects, manifest)
    if len(todo) < len(objects):
        log.info(
            "lake=%s skipped=%d objects committed by another run since planned",
            lake.uri,
            len(objects) - len(todo),
        )
    return todo, lake.index(manifest)


def _read_ahead(pool, source, info, mapping) -> Future | None:
    """Start reading a small object in the background; big ones stream in line."""
    if info.size > READ_AHEAD_MAX_BYTES:
        return None
    reader = ObjectReader(source.describe(info.key), mapping)
    return pool.submit(lambda: (reader, list(reader.tables(read_blocks(source, info)))))


def land_object(
    source: Store,
    lake: Lake,
    info: ObjectInfo,
    prepared: Future | None,
    index: DedupIndex,
    mapping: Mapping[str, str] | None,
    settings: IngestSettings,
) -> tuple[ObjectResult, Entry | None]:
    """Dedup and write an object's rows and refused lines; return its manifest entry."""
    uri = source.describe(info.key)
    landing = _Landing(uri, info, lake, index, settings)
    try:
        if prepared is None:
            reader = ObjectReader(uri, mapping)
            tables = reader.tables(read_blocks(source, info))
        else:
            reader, tables = prepared.result()
        for table in tables:
            landing.add(table)
        landing.write_chunk()
    except (OSError, EOFError, ValueError, DriftloopError, pa.ArrowException) as exc:
        return landing.failed(exc), None
    except Exception as exc:  # botocore's errors share no base with the ones above
        if type(exc).__module__.split(".")[0] not in {"botocore", "urllib3", "zlib"}:
            raise
        return landing.failed(exc), None
    return landing.result, landing.commit_entry(reader)


class _Landing:
    """One object while it lands: rows kept, parts written, ids seen."""

    def __init__(
        self,
        uri: str,
        info: ObjectInfo,
        lake: Lake,
        index: DedupIndex,
        settings: IngestSettings,
    ) -> None:
        self.uri, self.info, self.lake, self.index = uri, info, lake, index
        self.settings = settings
        self.oid = object_id(uri, info.etag)
        self.result = ObjectResult(info)
        self.kept: list[pa.Table] = []
        self.kept_rows = 0
        self.in_object = DedupIndex()
        self.landed: list[np.ndarray] = []
        self.parts: list[str] = []
        self.chunks = 0

    def add(self, table: pa.Table) -> None:
        self._keep_new(table)
        if self.kept_rows >= self.settings.rows_per_part:
            self.write_chunk()

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
        self.parts += self.lake.write_interactions(table, self.oid, self.chunks)
        self.chunks += 1
        self.result.landed += table.num_rows
        self.kept, self.kept_rows = [], 0

    def failed(self, exc: Exception) -> ObjectResult:
        self.result.error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "object=%s failed, left for the next run: %s", self.uri, self.result.error
        )
        return self.result

    def commit_entry(self, reader: ObjectReader) -> Entry:
        self.result.read = reader.read
        if reader.bad:
            self.result.quarantined = len(reader.bad)
            table = pa.Table.from_pylist(reader.bad, QUARANTINE_SCHEMA)
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
