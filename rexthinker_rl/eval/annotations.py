"""Benchmark files: HumanRef ``annotations.jsonl``, our parquet/JSONL sets as ground truth, prediction files.

HumanRef annotation (one JSON object a line; other fields are ignored)::

    {"id": "...", "image_name": "...", "referring": "the man in red", "domain": "attribute", "sub_domain": "...",
     "candidate_boxes": [[x0, y0, x1, y1], ...], "answer_boxes": [[x0, y0, x1, y1], ...]}

Prediction file, HumanRef's metric format: ``{"id": "...", "extracted_predictions": [[x0, y0, x1, y1], ...]}`` a line.
All boxes here are in original-image pixels. Our training sets keep boxes in the resized frame; they are mapped back
with :func:`rexthinker_rl.data.dataset.boxes_to_original`. Our sets have no domain column: the subset is derived from the
referring expression by :func:`derive_domain` (a ``domain`` / ``sub_domain`` column, where present, wins).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewards.parsing import parse_answer
from rexthinker_rl.data.dataset import (
    DataError,
    boxes_to_original,
    hints_from_problem,
    image_header_size,
    image_payload,
    is_box,
    parse_hints,
    read_rows,
    referring_from_problem,
    resized_size,
)
from rexthinker_rl.data.rows import duplicate_ids, read_text, row_uid
from rexthinker_rl.eval.metrics import REJECTION_DOMAIN, GroundTruth
from rexthinker_rl.utils import atomic_write_text

HUMANREF_REQUIRED = ("id", "referring", "answer_boxes", "domain")
_COLOURS = "red|green|blue|yellow|purple|orange|white|black|gray|grey|pink|brown|cyan|magenta"
_POSITIONS = "leftmost|rightmost|topmost|bottommost|left|right|top|bottom|middle|centre|center"
_COLOUR_WORD = re.compile(rf"\b({_COLOURS})\b", re.IGNORECASE)
_POSITION_WORD = re.compile(rf"\b({_POSITIONS})\b", re.IGNORECASE)


@dataclass
class HumanRefRecord:
    """One HumanRef annotation; boxes in original-image pixels."""

    id: str
    image_name: str | None
    referring: str
    candidate_boxes: list[list[float]]
    answer_boxes: list[list[float]]
    domain: str
    sub_domain: str
    category: str = "person"

    def ground_truth(self) -> GroundTruth:
        return GroundTruth(self.id, self.answer_boxes, self.domain, self.sub_domain)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "image_name": self.image_name,
            "referring": self.referring,
            "candidate_boxes": self.candidate_boxes,
            "answer_boxes": self.answer_boxes,
            "domain": self.domain,
            "sub_domain": self.sub_domain,
            "category": self.category,  # not HumanRef's (always persons); lets other categories round-trip
        }


def derive_domain(referring: str, is_rejection: bool) -> tuple[str, str]:
    """``(domain, sub_domain)`` of a referring expression from our sets, which carry no domain column.

    rejection (no target) -> ``rejection``; a position word (leftmost, top, ...) -> ``position`` / that word; a colour
    word -> ``attribute`` / ``colour`` (``colour_multi`` for "all ..."); anything else -> ``other``.
    """
    if is_rejection:
        return REJECTION_DOMAIN, REJECTION_DOMAIN
    position = _POSITION_WORD.search(referring)
    if position:
        return "position", position.group(1).lower()
    if _COLOUR_WORD.search(referring):
        return "attribute", "colour_multi" if referring.strip().lower().startswith("all ") else "colour"
    return "other", "other"


# ------------------------------------------------------------------------------------------------------------ HumanRef
def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    records = []
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((line_number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(f"{path.name} line {line_number}: invalid JSON ({err})") from None
    return records


def _boxes(value: Any, where: str, key: str) -> list[list[float]]:
    if not isinstance(value, list) or not all(is_box(box) for box in value):
        raise DataError(f"{where}: {key!r} must be a list of [x0, y0, x1, y1] boxes, got {str(value)[:80]}")
    return [[float(v) for v in box] for box in value]


def is_humanref_file(path: str | Path) -> bool:
    """True for a JSONL file whose first record looks like HumanRef's (``image_name`` or ``answer_boxes``, and no
    ``problem`` prompt column, which our training-schema JSONL always has)."""
    path = Path(path)
    if path.suffix != ".jsonl" or not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as handle:  # a file that is not UTF-8 is named by its reader
        for line in handle:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return False
                if not isinstance(first, dict) or "problem" in first:
                    return False
                return "image_name" in first or "answer_boxes" in first
    return False


def read_humanref(path: str | Path) -> list[HumanRefRecord]:
    """HumanRef annotations, checked; DataError naming the line and key that is wrong."""
    path = Path(path)
    records, seen = [], set()
    for line_number, raw in _read_jsonl(path):
        where = f"{path.name} line {line_number}"
        if not isinstance(raw, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        missing = [key for key in HUMANREF_REQUIRED if key not in raw]
        if missing:
            raise DataError(f"{where}: missing key {missing[0]!r} (HumanRef needs {', '.join(HUMANREF_REQUIRED)})")
        record_id = str(raw["id"])
        if record_id in seen:
            raise DataError(f"{where}: id {record_id!r} appears twice")
        seen.add(record_id)
        domain = raw["domain"]
        if not isinstance(domain, str) or not domain:
            raise DataError(f"{where}: 'domain' must be a non-empty string, got {domain!r}")
        candidates = raw.get("candidate_boxes") or []
        candidates = [item.get("bbox") if isinstance(item, dict) else item for item in candidates]
        records.append(
            HumanRefRecord(
                id=record_id,
                image_name=raw.get("image_name"),
                referring=str(raw["referring"]),
                candidate_boxes=_boxes(candidates, where, "candidate_boxes"),
                answer_boxes=_boxes(raw["answer_boxes"], where, "answer_boxes"),
                domain=domain,
                sub_domain=str(raw.get("sub_domain") or domain),
                category=str(raw.get("category") or "person"),
            )
        )
    return records


def write_humanref(path: str | Path, records: list[HumanRefRecord]) -> None:
    """HumanRef-format annotations, atomically (so ``rexthinker-eval score`` or HumanRef's script can re-score)."""
    atomic_write_text(Path(path), "".join(json.dumps(record.to_dict()) + "\n" for record in records))


# ---------------------------------------------------------------------------------------------------- our datasets
def dataset_records(
    path: str | Path,
    min_pixels: int,
    max_pixels: int,
    answer_key: str = "answer",
    image_key: str = "images",
    apply_exif: bool = True,
    prompt_key: str = "problem",
) -> list[HumanRefRecord]:
    """Rows of a training-schema parquet/JSONL as HumanRef records in original-image pixels.

    Sizes come from the ``image_size`` / ``resized_size`` columns, else from the image header and the pixel bounds
    (which must be the ones the set was built with). Ids are the row id, else ``<file>:<row>`` (as training uses);
    two rows with one id are refused, since predictions are keyed by id.
    """
    rows = read_rows(path)
    check_unique_ids(rows)
    records = []
    for index, row in enumerate(rows.iter_rows()):
        where = rows.where(index)
        file, local = rows.locate(index)
        original = row.get("image_size")
        if original is None:
            original = image_header_size(image_payload(row, image_key, file.parent, where), where, apply_exif)
        resized = row.get("resized_size") or resized_size(original[0], original[1], min_pixels, max_pixels)
        answer = row.get(answer_key)
        parsed = parse_answer(answer) if isinstance(answer, str) else None
        if parsed is None or not parsed.ok:
            reason = parsed.error if parsed is not None else "missing"
            raise DataError(f"{where}: {answer_key!r} is not boxes or the rejection sentence ({reason})")
        problem = row.get(prompt_key) or ""
        hints = (
            parse_hints(row["hints"], where) if row.get("hints") is not None else hints_from_problem(problem, where)
        )
        referring = row.get("referring") or referring_from_problem(problem) or ""
        answers = boxes_to_original([list(box) for box in parsed.boxes], original, resized)
        derived = derive_domain(referring, not answers)
        records.append(
            HumanRefRecord(
                id=row_uid(row, file, local),
                image_name=None,
                referring=referring,
                candidate_boxes=[
                    box for boxes in (hints or {}).values() for box in boxes_to_original(boxes, original, resized)
                ],
                answer_boxes=answers,
                domain=row.get("domain") or derived[0],
                sub_domain=row.get("sub_domain") or derived[1],
                category=row.get("category") or "object",
            )
        )
    return records


def check_unique_ids(rows) -> None:
    """DataError naming the first row whose id an earlier row has: predictions are keyed by id."""
    repeated = duplicate_ids(rows)
    if repeated:
        uid, where, first = repeated[0]
        more = (
            f" ({len(repeated) - 1} more ids repeat; `rexthinker-data validate` lists them)"
            if len(repeated) > 1
            else ""
        )
        raise DataError(
            f"{where}: id {uid!r} is also {first}'s; predictions are keyed by id, so both rows would be scored with "
            f"one prediction: give every row its own id{more}"
        )


def load_records(
    path: str | Path, min_pixels: int, max_pixels: int, apply_exif: bool = True, keys: dict[str, str] | None = None
) -> list[HumanRefRecord]:
    """Ground truth of a HumanRef ``annotations.jsonl`` or of one of our parquet/JSONL sets; ``keys``: the set's
    columns (``answer_key``, ``image_key``, ``prompt_key``: ``data.*``) where they are not the defaults."""
    if is_humanref_file(path):
        return read_humanref(path)
    return dataset_records(path, min_pixels, max_pixels, apply_exif=apply_exif, **(keys or {}))


# -------------------------------------------------------------------------------------------------------- predictions
def read_predictions(path: str | Path) -> dict[str, list[list[float]]]:
    """``{id: boxes}`` from a HumanRef-format prediction file (``[[]]`` and ``[]`` both mean no box)."""
    path = Path(path)
    predictions: dict[str, list[list[float]]] = {}
    for line_number, raw in _read_jsonl(path):
        where = f"{path.name} line {line_number}"
        if not isinstance(raw, dict) or "id" not in raw or "extracted_predictions" not in raw:
            raise DataError(f"{where}: expected {{'id': ..., 'extracted_predictions': [[x0, y0, x1, y1], ...]}}")
        boxes = [box for box in raw["extracted_predictions"] or [] if box != []]
        record_id = str(raw["id"])
        if record_id in predictions:
            raise DataError(f"{where}: id {record_id!r} appears twice")
        predictions[record_id] = _boxes(boxes, where, "extracted_predictions")
    return predictions


def write_predictions(path: str | Path, predictions: list[tuple[str, list[list[float]]]]) -> None:
    """HumanRef-format predictions, one line per sample, atomically."""
    lines = [json.dumps({"id": sample_id, "extracted_predictions": boxes}) for sample_id, boxes in predictions]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
