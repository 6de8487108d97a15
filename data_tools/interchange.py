"""The interchange format: referring records in original-image pixels, before box hints are in the resized frame.

A file is a JSON list of records, or JSON lines (one record a line, whatever the file is called)::

    {"id": "cat-0",                                   # optional; convert assigns "<file stem>-<index>" otherwise
     "image_name": "000123.jpg",                      # path relative to --image-root
     "referring": "the cat on the left",
     "category": "cat",
     "answer_boxes": [[10, 20, 110, 220]],            # [x0, y0, x1, y1]; [] = nothing in the image matches
     "candidate_boxes": [{"bbox": [10, 20, 110, 220], "category": "cat", "score": 0.91}, ...]}   # optional

Rex-Thinker's records are read as its tools write them: ``"ans": [x0, y0, x1, y1]`` (a single box) in place of
``answer_boxes``, its ``image_id`` (kept), ``{"bbox", "category"}`` candidates. Candidates may also be bare boxes
(category defaults to the record's). Records are numbered from 0 in file order; every
error says ``"<file> record <i>: <reason>"``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rexthinker_rl.data.dataset import DataError
from rexthinker_rl.data.rows import read_text
from rexthinker_rl.utils import atomic_write_text

Box = list[float]
KNOWN_FIELDS = ("id", "image_name", "image_id", "referring", "category", "answer_boxes", "ans", "candidate_boxes")
_CANDIDATE_FIELDS = ("bbox", "category", "score")


class RecordError(ValueError):
    """One record is unusable; ``index`` is its position in the file and ``reason`` says what is wrong."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"record {index}: {reason}")
        self.index = index
        self.reason = reason


@dataclass
class Candidate:
    """One candidate (hint) box in original-image pixels."""

    bbox: Box
    category: str
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        item: dict[str, Any] = {"bbox": self.bbox, "category": self.category}
        if self.score is not None:
            item["score"] = self.score
        return item


@dataclass
class Record:
    """One referring expression on one image; boxes in original-image pixels."""

    index: int  # position in the source file
    image_name: str
    referring: str
    category: str
    answer_boxes: list[Box]
    candidate_boxes: list[Candidate] | None = None
    id: str | None = None
    image_id: int | str | None = None  # Rex-Thinker's records carry the COCO image id; kept, not used

    def to_dict(self) -> dict[str, Any]:
        item: dict[str, Any] = {} if self.id is None else {"id": self.id}
        item |= {"image_name": self.image_name} | ({} if self.image_id is None else {"image_id": self.image_id})
        item |= {
            "referring": self.referring,
            "category": self.category,
            "answer_boxes": self.answer_boxes,
        }
        if self.candidate_boxes is not None:
            item["candidate_boxes"] = [candidate.to_dict() for candidate in self.candidate_boxes]
        return item

    def category_candidates(self) -> list[Box]:
        """The candidate boxes of the record's own category, in order (the ones ground truth is matched against)."""
        return [candidate.bbox for candidate in self.candidate_boxes or [] if candidate.category == self.category]


# ------------------------------------------------------------------------------------------------------------ reading
def read_raw_records(path: str | Path) -> list[Any]:
    """The records of a JSON list file or of JSON lines (one record a line, whatever the file is called: Rex-Thinker's
    tools write ``anno.json`` that way), unparsed; DataError for a malformed file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    text = read_text(path)
    if path.suffix == ".jsonl":
        return _json_lines(path, text)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        if text.lstrip().startswith("{"):
            return _json_lines(path, text)
        raise DataError(f"{path.name}: invalid JSON ({err})") from None
    if isinstance(records, dict):
        return [records]  # JSON lines holding one record
    if not isinstance(records, list):
        raise DataError(f"{path.name}: expected a JSON list of records, got {type(records).__name__}")
    return records


def _json_lines(path: Path, text: str) -> list[Any]:
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path.name} line {line_number}: invalid JSON ({err})") from None
    return records


def parse_record(raw: Any, index: int) -> Record:
    """A checked :class:`Record` from one raw record; :class:`RecordError` with the first thing wrong."""
    if not isinstance(raw, dict):
        raise RecordError(index, f"expected a JSON object, got {type(raw).__name__}")
    unknown = [key for key in raw if key not in KNOWN_FIELDS]
    if unknown:
        raise RecordError(index, f"unknown field {_describe_unknown(unknown[0], KNOWN_FIELDS)}")
    for key in ("image_name", "referring", "category"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise RecordError(index, f"{key!r} must be a non-empty string, got {raw.get(key)!r}")
    if ("answer_boxes" in raw) == ("ans" in raw):
        raise RecordError(index, "give exactly one of 'answer_boxes' (list of boxes) and 'ans' (one box)")
    answers = raw["answer_boxes"] if "answer_boxes" in raw else _ans_boxes(raw["ans"], index)
    if not isinstance(answers, list):
        raise RecordError(index, f"'answer_boxes' must be a list of [x0, y0, x1, y1] boxes, got {answers!r}")
    answer_boxes = [_box(box, index, f"answer box {number}") for number, box in enumerate(answers)]
    for number, box in enumerate(answer_boxes):
        if box in answer_boxes[:number]:
            raise RecordError(index, f"answer box {box} is listed twice")
    record_id = raw.get("id")
    if record_id is not None and (not isinstance(record_id, str | int) or isinstance(record_id, bool)):
        raise RecordError(index, f"'id' must be a string or an integer, got {record_id!r}")
    candidates = None
    if raw.get("candidate_boxes") is not None:
        candidates = _candidates(raw["candidate_boxes"], raw["category"], index)
    return Record(
        index=index,
        image_name=raw["image_name"],
        referring=raw["referring"].strip(),
        category=raw["category"].strip(),
        answer_boxes=answer_boxes,
        candidate_boxes=candidates,
        id=None if record_id is None else str(record_id),
        image_id=raw.get("image_id"),
    )


def _describe_unknown(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    suggestion = f"; did you mean {close[0]!r}?" if close else ""
    return f"{key!r} (known fields: {', '.join(known)}){suggestion}"


def _ans_boxes(ans: Any, index: int) -> list[Any]:
    """Rex-Thinker's ``ans``: one box, or (leniently) a list of boxes, or [] for no target."""
    if isinstance(ans, list) and len(ans) == 4 and all(_is_number(value) for value in ans):
        return [ans]
    if isinstance(ans, list):
        return ans
    raise RecordError(index, f"'ans' must be one [x0, y0, x1, y1] box, got {ans!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _box(value: Any, index: int, what: str) -> Box:
    if not (isinstance(value, list | tuple) and len(value) == 4 and all(_is_number(item) for item in value)):
        raise RecordError(index, f"{what} {value!r} is not [x0, y0, x1, y1] (4 finite numbers)")
    box = [float(item) if isinstance(item, float) else int(item) for item in value]
    if not (box[2] > box[0] and box[3] > box[1]):
        raise RecordError(index, f"{what} {box} has x1 <= x0 or y1 <= y0 (boxes are [x0, y0, x1, y1], not xywh)")
    return box


def _candidates(value: Any, category: str, index: int) -> list[Candidate]:
    if not isinstance(value, list):
        raise RecordError(index, f"'candidate_boxes' must be a list, got {type(value).__name__}")
    candidates = []
    for number, item in enumerate(value):
        what = f"candidate box {number}"
        if not isinstance(item, dict):
            candidates.append(Candidate(_box(item, index, what), category.strip()))
            continue
        unknown = [key for key in item if key not in _CANDIDATE_FIELDS]
        if unknown:
            raise RecordError(index, f"{what}: unknown field {_describe_unknown(unknown[0], _CANDIDATE_FIELDS)}")
        item_category = item.get("category", category)
        if not isinstance(item_category, str) or not item_category.strip():
            raise RecordError(index, f"{what}: 'category' must be a non-empty string, got {item_category!r}")
        score = item.get("score")
        if score is not None and not _is_number(score):
            raise RecordError(index, f"{what}: 'score' must be a number, got {score!r}")
        candidates.append(Candidate(_box(item.get("bbox"), index, what), item_category.strip(), score))
    return candidates


def image_path(root: Path, image_name: str, allow_outside: bool, index: int) -> Path:
    """The file of a record's ``image_name`` under ``root``; RecordError when there is none, or for a name that leaves
    the root (absolute, or climbing above it with ``..``) unless ``allow_outside``. Judged on the name as written: a
    symbolic link inside the root (a linked image folder) is followed."""
    parts = os.path.normpath(image_name).replace("\\", "/").split("/")
    if not allow_outside and (os.path.isabs(image_name) or parts[0] == ".."):
        raise RecordError(
            index,
            f"image_name {image_name!r} leaves --image-root (an absolute path, or '..' above it): images are read "
            "only under --image-root; pass --allow-outside-root to read it anyway",
        )
    if not (root / image_name).is_file():
        raise RecordError(index, f"image file {image_name!r} not found under {root}")
    return root / image_name


def box_outside(box: Box, width: int, height: int) -> bool:
    """True when ``box`` reaches outside a ``width x height`` image (coordinates run from 0 to the size)."""
    return box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height


def check_inside(record: Record, width: int, height: int) -> None:
    """RecordError when an answer or candidate box reaches outside the image."""
    boxes = [("answer box", box) for box in record.answer_boxes]
    boxes += [("candidate box", candidate.bbox) for candidate in record.candidate_boxes or []]
    for what, box in boxes:
        if box_outside(box, width, height):
            raise RecordError(record.index, f"{what} {box} lies outside the {width}x{height} image")


# ---------------------------------------------------------------------------------------------------------------- ids
def assign_ids(raws: list[Any], prefix: str) -> tuple[list[str], int]:
    """``(id of every record, automatic ids moved aside)``: a record's own id (as text), else ``<prefix>-<index>``;
    an automatic id that some record already has as its own becomes ``<prefix>-<index>-<n>`` (the first n free), so
    no automatic id ever equals a user's (repeated own ids are bad records: :func:`duplicate_ids`)."""
    own = [_own_id(raw) for raw in raws]
    taken = {record_id for record_id in own if record_id is not None}
    ids, moved = [], 0
    for index, record_id in enumerate(own):
        if record_id is None:
            base = record_id = f"{prefix}-{index:06d}"
            number = 0
            while record_id in taken:
                number += 1
                record_id = f"{base}-{number}"
            moved += number > 0
            taken.add(record_id)
        ids.append(record_id)
    return ids, moved


def _own_id(raw: Any) -> str | None:
    """A record's own id as text; None when it has none, or one parse_record refuses (not a string or integer)."""
    value = raw.get("id") if isinstance(raw, dict) else None
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def duplicate_ids(raws: list[Any]) -> list[tuple[int, str]]:
    """``(index, reason)`` of every record whose id repeats an earlier one's (ids key predictions and rollout logs)."""
    first: dict[str, int] = {}
    errors = []
    for index, raw in enumerate(raws):
        record_id = raw.get("id") if isinstance(raw, dict) else None
        if record_id is None:
            continue
        if str(record_id) in first:
            errors.append((index, f"id {record_id!r} already used by record {first[str(record_id)]}"))
        else:
            first[str(record_id)] = index
    return errors


# ------------------------------------------------------------------------------------------------------------ writing
def write_records(path: str | Path, records: list[Record]) -> None:
    """Write records atomically: JSONL for a ``.jsonl`` path, else a JSON list with one record a line."""
    path = Path(path)
    lines = [json.dumps(record.to_dict(), ensure_ascii=False) for record in records]
    if path.suffix == ".jsonl":
        text = "".join(f"{line}\n" for line in lines)
    else:
        text = "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"
    atomic_write_text(path, text)


def report_path(out: str | Path) -> Path:
    """Where a tool writes its JSON report (counts and bad records) beside ``out``: ``OUT.report.json`` (the output's
    full name, so ``train.parquet`` and ``train.json`` in one folder keep reports of their own)."""
    out = Path(out)
    return out.with_name(f"{out.name}.report.json")


def write_report(out: str | Path, report: dict[str, Any]) -> Path:
    path = report_path(out)
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return path
