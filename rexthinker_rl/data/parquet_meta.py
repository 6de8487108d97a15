"""The frame a parquet set was made in, recorded in its footer metadata: box rounding, pixel bounds, prompt preset.

Boxes in a training set are integers in the processor's resized frame; which integers depends on the pixel bounds and
on how coordinates were rounded (``round``, ours, or ``original``, Rex-Thinker's truncation). ``rexthinker-data
convert`` and ``repair`` record both, so that training and evaluation can check they use the frame the data was made
in. A set without the record (Rex-Thinker's own parquet, our synthetic sets) is read as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

KEY = b"rexthinker_rl.frame"


def read_frame_metadata(path: str | Path) -> dict[str, Any] | None:
    """The record of a parquet file (or of the first shard of a folder), or None when there is none."""
    path = Path(path)
    if path.is_dir():
        shards = sorted(path.glob("*.parquet"))
        path = shards[0] if shards else path
    if path.suffix != ".parquet" or not path.is_file():
        return None
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError):
        return None  # not a parquet file: whoever reads the rows reports it
    if KEY not in metadata:
        return None
    return json.loads(metadata[KEY])


def write_frame_metadata(path: str | Path, record: dict[str, Any]) -> None:
    """Add the record to a parquet file, or to every shard of a folder. A footer cannot be edited in place: each file
    is copied row group by row group into a temp file beside it, which then replaces it."""
    path = Path(path)
    for file in sorted(path.glob("*.parquet")) if path.is_dir() else [path]:
        temp = file.with_name(f".{file.name}.meta-tmp")
        try:
            with pq.ParquetFile(file) as source:
                schema = source.schema_arrow
                schema = schema.with_metadata({**(schema.metadata or {}), KEY: json.dumps(record).encode()})
                with pq.ParquetWriter(temp, schema) as writer:
                    for group in range(source.num_row_groups):
                        writer.write_table(source.read_row_group(group).replace_schema_metadata(schema.metadata))
            os.replace(temp, file)
        finally:
            temp.unlink(missing_ok=True)


class FrameMismatch(ValueError):
    """A set's recorded pixel bounds differ from the configured ones."""


def check_made_with(path: str | Path, min_pixels: int, max_pixels: int) -> dict[str, Any]:
    """The set's record (``{}`` without one), after checking its pixel bounds against the configured ones."""
    made = read_frame_metadata(path) or {}
    bounds = (made.get("min_pixels"), made.get("max_pixels"))
    if None not in bounds and bounds != (min_pixels, max_pixels):
        raise FrameMismatch(
            f"{path}: made with min_pixels={bounds[0]}, max_pixels={bounds[1]} (its metadata), but data.min_pixels="
            f"{min_pixels}, data.max_pixels={max_pixels}: its boxes are in another frame; set these to the data's "
            "values (or convert again with the configured ones)"
        )
    return made
