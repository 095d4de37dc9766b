"""Read a source object into canonical rows, block by block, refusing bad lines.

Clean blocks of flat JSON lines are normalised by Arrow at once; a block that fails is
bisected so only a few lines take the record-by-record Python path, which gives each
refused line its reason.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from driftloop.errors import InvalidRecord
from driftloop.schema import INTERACTION_SCHEMA
from driftloop.storage import ObjectInfo, Store, iter_lines
from tasks.fast_records import normalize_block
from tasks.records import normalize, parse_line

# Lines normalised together by Arrow; a block that fails is bisected down to this.
BLOCK_LINES = 4096
MIN_FAST_BLOCK = 16


class ObjectReader:
    """One object's canonical rows; what it refused is kept in `bad`, with reasons."""

    def __init__(self, uri: str, mapping: Mapping[str, str] | None = None) -> None:
        self.uri, self.mapping = uri, mapping
        self.now = datetime.now(UTC)
        self.read = 0
        self.bad: list[dict[str, Any]] = []
        self.fast = mapping is None

    def tables(self, blocks: Iterator[Block]) -> Iterator[pa.Table]:
        """Yield canonical rows (with lineage) in line order, a table per piece."""
        for block in blocks:
            self.read += len(block)
            yield from self._normalize(block)

    def _normalize(self, block: Block) -> list[pa.Table]:
        """Canonical rows of a block in line order; refused lines go to `bad`."""
        if self.fast and len(block) >= MIN_FAST_BLOCK and block.records is None:
            if not _looks_flat(block.raws[0]):
                self.fast = False
                return self._normalize_each(block)
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


def _looks_flat(line: bytes) -> bool:
    """Whether a record is in the flat shape the Arrow path reads (not OpenAI's)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return True  # one bad line says nothing of the object's shape
    return not (isinstance(record, dict) and isinstance(record.get("request"), dict))


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
