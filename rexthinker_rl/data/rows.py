"""Reading dataset rows: a parquet file, a folder of parquet shards, or a JSONL file whose ``image`` field is a path
relative to the JSONL file's folder; rows are counted from 0 within their file and errors say ``"<file> row <i>:
..."``. Parquet stays a memory-mapped Arrow table and images stay undecoded until asked for (``images``: the one
decode).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rexthinker_rl.errors import DataError


@dataclass
class _Source:
    path: Path
    start: int  # index (in the whole table) of the file's first row
    count: int


class RowTable:
    """The rows of a dataset, read by index; parquet stays a memory-mapped Arrow table, images stay undecoded."""

    def __init__(self, sources: list[_Source], table: pa.Table | None = None, records: list[dict] | None = None):
        self.sources = sources
        self._table = table
        self._records = records

    def __len__(self) -> int:
        return self._table.num_rows if self._table is not None else len(self._records)

    @property
    def column_names(self) -> list[str]:
        if self._table is not None:
            return list(self._table.column_names)
        return sorted({key for record in self._records for key in record})

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._table is not None:
            return self._table.slice(index, 1).to_pylist()[0]
        return self._records[index]

    def column(self, name: str) -> list[Any]:
        """One column's values, in row order (None where a JSONL record lacks it)."""
        if self._table is not None:
            return self._table.column(name).to_pylist()
        return [record.get(name) for record in self._records]

    def iter_rows(self, batch_size: int = 256) -> Iterator[dict[str, Any]]:
        """All rows in order, a batch of Arrow rows converted at a time."""
        if self._table is None:
            yield from self._records
            return
        for batch in self._table.to_batches(max_chunksize=batch_size):
            yield from batch.to_pylist()

    def locate(self, index: int) -> tuple[Path, int]:
        """``(file, row index within that file)`` of a row."""
        for source in self.sources:
            if source.start <= index < source.start + source.count:
                return source.path, index - source.start
        raise IndexError(f"row {index} out of range (the table has {len(self)} rows)")

    def where(self, index: int) -> str:
        path, local = self.locate(index)
        return f"{path.name} row {local}"


def load_json(text: str, where: str, what: str = "") -> Any:
    """``text`` parsed as JSON, or a :class:`DataError` saying where (and what) is not valid JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = f"{where}: " if where else ""
        raise DataError(f"{where}{what + ' ' if what else ''}not valid JSON ({err})") from None


def read_text(path: str | Path) -> str:
    """A text file's content as UTF-8; DataError naming the file, the first byte that is not UTF-8 and its line."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}, line {line}: {err.reason}); "
            "save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT` for a Latin-1 file"
        ) from None


def row_uid(row: dict, file: Path, local: int) -> str:
    """The id a row goes by in training and evaluation: its ``id`` column, else ``<file name>:<row in file>``."""
    return str(row["id"]) if row.get("id") is not None else f"{file.name}:{local}"


def duplicate_ids(rows: RowTable) -> list[tuple[str, str, str]]:
    """``(id, where it is repeated, where it was first)`` for every row whose id (:func:`row_uid`) an earlier row has."""
    ids = rows.column("id") if "id" in rows.column_names else [None] * len(rows)
    first: dict[str, str] = {}
    repeated = []
    for source in rows.sources:
        for local, value in enumerate(ids[source.start : source.start + source.count]):
            uid = row_uid({"id": value}, source.path, local)
            where = f"{source.path.name} row {local}"
            if uid in first:
                repeated.append((uid, where, first[uid]))
            else:
                first[uid] = where
    return repeated


def read_rows(path: str | Path) -> RowTable:
    """Rows of a parquet file, a folder of parquet shards (sorted by name), or a JSONL file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist")
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise DataError(f"{path}: folder holds no *.parquet files")
    elif path.suffix == ".jsonl":
        return _read_jsonl(path)
    else:
        files = [path]
    tables, sources, start = [], [], 0
    for file in files:
        try:
            table = pq.read_table(file, memory_map=True)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{file}: not a readable parquet file ({err})") from None
        tables.append(table)
        sources.append(_Source(file, start, table.num_rows))
        start += table.num_rows
    try:
        table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise DataError(f"{path}: shards have incompatible columns ({err})") from None
    return RowTable(sources, table=table)


def _read_jsonl(path: Path) -> RowTable:
    records = []
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        record = load_json(line, f"{path.name} line {line_number}")
        if not isinstance(record, dict):
            raise DataError(f"{path.name} line {line_number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return RowTable([_Source(path, 0, len(records))], records=records)


def image_payload(row: dict, image_key: str, base_dir: Path, where: str) -> bytes | Path:
    """The encoded bytes or the file path of a row's single image (``image_key`` column, else ``image``)."""
    value = row.get(image_key, row.get("image"))
    if value is None:
        raise DataError(f"{where}: no image (column {image_key!r}, or 'image' holding a path)")
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise DataError(f"{where}: {len(value)} images in {image_key!r}; exactly one image per row is supported")
        value = value[0]
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        file = base_dir / value
        if not file.is_file():
            raise DataError(f"{where}: image file {value!r} not found")
        return file
    raise DataError(f"{where}: image must be bytes, {{'bytes', 'path'}} or a path, got {type(value).__name__}")
